"""Tiny Marian models made in the tests, laid out as the Hugging Face hub has them (config.json,
generation_config.json, model.safetensors or pytorch_model.bin, source.spm, target.spm,
vocab.json [, target_vocab.json], tokenizer_config.json): random weights, sentencepiece models
trained here on a few hundred lines. No network."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import sentencepiece as spm
import torch

SRC_WORDS = "the a dog cat house tree sees likes big small red green runs sleeps in on with 2024 3.5 don't".split()
TGT_WORDS = "der die das hund katze haus baum sieht mag groß klein rot grün läuft schläft in auf mit".split()
LANGUAGE_CODES = [">>deu<<", ">>fra<<", ">>nld<<"]


def lines(words: list[str], n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(2, 9)))
        out.append(text[0].upper() + text[1:] + rng.choice([".", "!", "?", "", ","]))
    return out


def train_spm(texts: list[str], vocab_size: int) -> bytes:
    out = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(texts), model_writer=out, vocab_size=vocab_size,
                                   hard_vocab_limit=False, minloglevel=2, num_threads=1)
    return out.getvalue()


def spm_pieces(model: bytes) -> list[str]:
    sp = spm.SentencePieceProcessor(model_proto=model)
    return [sp.id_to_piece(i) for i in range(sp.get_piece_size())
            if not (sp.is_control(i) or sp.is_unknown(i))]


def marian_vocab(pieces: list[str], codes: list[str]) -> dict[str, int]:
    """Marian's layout: </s>=0, <unk>=1, the pieces, <pad>=last."""
    tokens = ["</s>", "<unk>"] + codes + [p for p in dict.fromkeys(pieces)] + ["<pad>"]
    return {t: i for i, t in enumerate(tokens)}


def make_marian_dir(folder: Path, *, tied: bool = True, shared: bool = True, d_model: int = 16, heads: int = 2,
                    ff: int = 24, layers: tuple[int, int] = (2, 2), weights: str = "safetensors",
                    activation: str = "swish", seed: int = 0, same_spm: bool = False, **config_overrides) -> Path:
    """A Marian model directory; returns it. Every weight random (LayerNorm gains and the logits
    bias too), so any slip in the permutation or the remap shows."""
    from transformers import MarianConfig, MarianMTModel, MarianTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    source = train_spm(lines(SRC_WORDS, 300, seed), 60)
    target = source if same_spm else train_spm(lines(TGT_WORDS, 300, seed + 1), 60)
    (folder / "source.spm").write_bytes(source)
    (folder / "target.spm").write_bytes(target)
    if shared:
        vocab = marian_vocab(spm_pieces(source) + spm_pieces(target), LANGUAGE_CODES)
        tgt_vocab = vocab
    else:
        vocab = marian_vocab(spm_pieces(source), [])
        tgt_vocab = marian_vocab(spm_pieces(target), [])
        (folder / "target_vocab.json").write_text(json.dumps(tgt_vocab), encoding="utf-8")
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    pad = tgt_vocab["<pad>"]
    config = MarianConfig(
        vocab_size=len(vocab), decoder_vocab_size=len(tgt_vocab), d_model=d_model,
        encoder_layers=layers[0], decoder_layers=layers[1], encoder_attention_heads=heads,
        decoder_attention_heads=heads, encoder_ffn_dim=ff, decoder_ffn_dim=ff,
        activation_function=activation, scale_embedding=True, max_position_embeddings=128,
        pad_token_id=pad, decoder_start_token_id=pad, eos_token_id=0, forced_eos_token_id=0,
        share_encoder_decoder_embeddings=shared, tie_word_embeddings=tied, dropout=0.0,
        attention_dropout=0.0, activation_dropout=0.0, **config_overrides)
    torch.manual_seed(seed)
    model = MarianMTModel(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "embed_positions" in name:  # the sinusoids: derived, not learned
                continue
            p.add_(torch.randn_like(p) * (0.3 if "layer_norm" in name else 0.05))
        model.final_logits_bias.copy_(torch.randn_like(model.final_logits_bias))
    model.generation_config.update(num_beams=4, max_length=40, bad_words_ids=[[pad]])
    if weights == "safetensors":
        model.save_pretrained(folder)
    else:  # the older hub layout: a pickled state dict, every tied copy written out
        model.config.save_pretrained(folder)
        model.generation_config.save_pretrained(folder)
        torch.save(model.state_dict(), folder / "pytorch_model.bin")
    tokenizer = MarianTokenizer(str(folder / "source.spm"), str(folder / "target.spm"), str(folder / "vocab.json"),
                                target_vocab_file=str(folder / "target_vocab.json") if not shared else None,
                                separate_vocabs=not shared)
    tokenizer.save_pretrained(folder)
    return folder


def load_hf(folder: Path):
    """(model, tokenizer) as transformers loads them."""
    from transformers import MarianMTModel, MarianTokenizer

    return MarianMTModel.from_pretrained(folder).eval(), MarianTokenizer.from_pretrained(folder)
