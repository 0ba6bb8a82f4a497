"""`tx export huggingface RUN_DIR OUT_DIR`: a run as a transformers Marian directory, loadable by
MarianMTModel.from_pretrained and AutoTokenizer.from_pretrained. The inverse of `tx import marian`
(txcli/marian.py holds the rules for both): an imported model exported again has its original
weights, bit for bit. Post-norm runs with a sentencepiece tokenizer only: Marian's layers are
post-norm without final norms, and MarianTokenizer reads sentencepiece models.
"""

from __future__ import annotations

import json
from pathlib import Path

from .. import marian, marian_weights
from ..atomic import write_bytes_atomic, write_dir_atomic, write_json_atomic
from ..checkpoint import MODEL_FILE
from ..errors import TxError, UsageError
from .run import load_model_file, load_tokenizers, read_run_recipe

EXPORT_RECORD = "tx_export.json"
FORMAT = "tx-export-huggingface/1"
ACTIVATIONS = {"silu": "swish", "relu": "relu", "gelu": "gelu"}  # tx's name -> transformers'


def export_huggingface(run_dir: Path, out_dir: Path) -> list[str]:
    """Check, convert, then write OUT_DIR whole (atomically); returns the file names written."""
    import torch
    from safetensors.torch import save as safetensors_bytes

    from ..sentencepiece_tokenizer import SentencePieceTokenizer

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if out_dir.exists() and not (out_dir.is_dir() and ((out_dir / EXPORT_RECORD).is_file() or not any(out_dir.iterdir()))):
        raise UsageError(f"{out_dir}: exists and is not an earlier tx Hugging Face export; refusing to replace it")
    recipe = read_run_recipe(run_dir)
    if recipe.model.norm != "post":
        raise UsageError(f"{run_dir}: model.norm is pre: Marian layers are post-norm with no final norm, so a "
                         "pre-norm model has no Hugging Face Marian equivalent; train with model.norm: post to export")
    if recipe.tokenizer.kind != "sentencepiece":
        raise UsageError(f"{run_dir}: tokenizer.kind is {recipe.tokenizer.kind}: MarianTokenizer reads sentencepiece "
                         "models; train with tokenizer.kind: sentencepiece to export")
    src_tok, tgt_tok = load_tokenizers(run_dir, recipe.tokenizer.joint)
    if not isinstance(src_tok, SentencePieceTokenizer) or not isinstance(tgt_tok, SentencePieceTokenizer):
        raise TxError(f"{run_dir}: its tokenizer files are not sentencepiece tokenizers, as recipe.yaml says")
    model = load_model_file(run_dir / MODEL_FILE, torch.device("cpu"))
    cfg = model.cfg.to_dict()
    if cfg["d_model"] % 2:
        raise UsageError(f"{run_dir}: model.d_model {cfg['d_model']} is odd; Marian's positions need an even width")
    joint = recipe.tokenizer.joint
    try:
        tgt_vocab, tgt_rows = marian.marian_vocab_from_tx(tgt_tok.vocab)
        src_vocab, src_rows = (tgt_vocab, tgt_rows) if joint else marian.marian_vocab_from_tx(src_tok.vocab)
    except ValueError as err:
        raise TxError(f"{run_dir}: {err}") from None
    with torch.no_grad():
        state = {k: v.detach() for k, v in model.state_dict().items()}
        weights = marian_weights.from_tx_state(state, cfg, src_rows, tgt_rows, joint)
    pad = len(tgt_vocab) - 1
    config = {
        "model_type": "marian", "architectures": ["MarianMTModel"],
        "vocab_size": len(src_vocab), "decoder_vocab_size": len(tgt_vocab), "d_model": cfg["d_model"],
        "encoder_layers": cfg["encoder_layers"], "decoder_layers": cfg["decoder_layers"],
        "encoder_attention_heads": cfg["heads"], "decoder_attention_heads": cfg["heads"],
        "encoder_ffn_dim": cfg["ff"], "decoder_ffn_dim": cfg["ff"],
        "activation_function": ACTIVATIONS[cfg["activation"]], "dropout": cfg["dropout"],
        "attention_dropout": 0.0, "activation_dropout": 0.0, "max_position_embeddings": cfg["max_positions"],
        "scale_embedding": True, "static_position_embeddings": True, "normalize_before": False,
        "pad_token_id": pad, "eos_token_id": 0, "decoder_start_token_id": pad, "forced_eos_token_id": 0,
        "share_encoder_decoder_embeddings": joint, "tie_word_embeddings": cfg["tie_embeddings"],
        "is_encoder_decoder": True,
    }
    generation = {"bad_words_ids": [[pad]], "decoder_start_token_id": pad, "eos_token_id": 0,
                  "forced_eos_token_id": 0, "pad_token_id": pad, "num_beams": recipe.decode.beam,
                  "max_length": min(cfg["max_positions"], recipe.data.max_len + 2)}
    tokenizer_config = {"tokenizer_class": "MarianTokenizer", "separate_vocabs": not joint,
                        "model_max_length": recipe.data.max_len + 1, "eos_token": "</s>", "unk_token": "<unk>",
                        "pad_token": "<pad>"}
    record = {"format": FORMAT, "source": str((run_dir / MODEL_FILE).resolve()),
              "vocabulary": "Marian ids: </s>=0, <unk>=1, tx ids 4.. in order, <pad>=last (tx's <s> row)"}

    def write(tmp: Path) -> None:
        write_bytes_atomic(tmp / "model.safetensors", safetensors_bytes(weights, metadata={"format": "pt"}))
        write_json_atomic(tmp / "config.json", config)
        write_json_atomic(tmp / "generation_config.json", generation)
        write_json_atomic(tmp / "tokenizer_config.json", tokenizer_config)
        write_bytes_atomic(tmp / "source.spm", src_tok.models["src"])
        write_bytes_atomic(tmp / "target.spm", tgt_tok.models["tgt"])
        write_bytes_atomic(tmp / "vocab.json", json.dumps(src_vocab, ensure_ascii=False, indent=1).encode("utf-8"))
        if not joint:
            write_bytes_atomic(tmp / "target_vocab.json", json.dumps(tgt_vocab, ensure_ascii=False, indent=1).encode("utf-8"))
        write_json_atomic(tmp / EXPORT_RECORD, record)  # last: its presence marks a complete export

    try:
        write_dir_atomic(out_dir, write)
    except OSError as err:
        raise TxError(f"{out_dir}: cannot write the export ({err.strerror or err})") from None
    return sorted(p.name for p in out_dir.iterdir())
