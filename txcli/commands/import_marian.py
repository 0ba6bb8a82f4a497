"""`tx import marian HF_DIR RUN_DIR`: a local Marian (OPUS-MT) model directory, as the hub's own
CLI downloads it, into a tx run directory: model.safetensors, the sentencepiece tokenizer file(s),
recipe.yaml (model section and decode defaults) and import.json (where it came from). Nothing is
downloaded; transformers is not needed. The run directory is built aside and renamed into place,
so a half-written import never looks like a run.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from .. import marian, marian_weights
from ..atomic import write_dir_atomic, write_json_atomic, write_text_atomic
from ..checkpoint import MODEL_FILE, RECIPE_FILE, save_model, tokenizer_files
from ..errors import TxError, UsageError
from ..schema import dump_yaml, recipe_from_plain

IMPORT_RECORD = "import.json"
DEFAULT_MAX_TOKENS = 512  # MarianTokenizer's model_max_length: source ids, </s> included


@dataclass
class ImportSummary:
    run_dir: Path
    weights: Path
    parameters: int
    layers: tuple[int, int]
    vocab_sizes: tuple[int, int]
    languages: list[str] = field(default_factory=list)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def import_marian(hf_dir: Path, run_dir: Path) -> ImportSummary:
    """Read, check and convert everything before writing anything; then write the run whole."""
    import torch

    from ..model import ModelConfig, Seq2SeqTransformer

    hf_dir, run_dir = Path(hf_dir), Path(run_dir)
    if not hf_dir.is_dir():
        raise UsageError(f"{hf_dir}: no such directory (download it first, e.g. "
                         "huggingface-cli download Helsinki-NLP/opus-mt-en-de --local-dir DIR)")
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        raise UsageError(f"{run_dir}: exists and is not empty; import into a new directory")
    try:
        config_path = hf_dir / "config.json"
        shape = marian.read_config(marian.read_json_file(config_path, "the model configuration"), str(config_path))
        generation_path = hf_dir / "generation_config.json"
        generation = marian.read_json_file(generation_path, "decoding defaults") if generation_path.is_file() else {}
        decode = marian.decode_defaults(generation, shape, str(generation_path))
        (src_tok, tgt_tok), (src_map, tgt_map) = marian.tokenizers(hf_dir, shape)
        weights_path, weights = marian.read_weights(hf_dir)
        state = marian_weights.to_tx_state(weights, shape, src_map, tgt_map, str(weights_path))
    except ValueError as err:
        raise UsageError(str(err)) from None
    tok_config = _json_or_empty(hf_dir / "tokenizer_config.json")
    max_tokens = tok_config.get("model_max_length", DEFAULT_MAX_TOKENS)
    if not isinstance(max_tokens, int) or max_tokens < 2 or max_tokens > 65_536:
        max_tokens = DEFAULT_MAX_TOKENS  # transformers writes a huge sentinel when there is no limit
    max_len = max_tokens - 1  # subwords kept before </s>, as MarianTokenizer truncates to model_max_length

    joint = shape.shared_vocab
    recipe_plain = {
        "name": hf_dir.resolve().name, "run_dir": str(run_dir.resolve()), "seed": 1,
        "data": {"max_len": max_len},
        "tokenizer": {"kind": "sentencepiece", "vocab_size": max(tgt_tok.vocab_size, src_tok.vocab_size), "joint": joint},
        "model": {k: shape.model[k] for k in ("d_model", "heads", "ff", "encoder_layers", "decoder_layers", "dropout",
                                              "norm", "activation", "tie_embeddings", "output_bias")},
        "decode": decode,
    }
    recipe = recipe_from_plain(recipe_plain, str(run_dir / RECIPE_FILE))  # validated before any write
    cfg = ModelConfig(**shape.model, max_positions=max(1024, max_len + 2), pad_id=0)
    try:
        model = Seq2SeqTransformer(cfg)
        model.load_state_dict(state, strict=True)
    except (RuntimeError, ValueError) as err:
        raise UsageError(f"{weights_path}: weights do not fit the model ({str(err).splitlines()[0]})") from None
    record = {
        "format": "tx-import-marian/1", "source": str(hf_dir.resolve()),
        "imported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "transformers_version": _json_or_empty(hf_dir / "config.json").get("transformers_version"),
        "files": {p.name: {"bytes": p.stat().st_size, "sha256": _sha256(p)} for p in sorted(hf_dir.iterdir())
                  if p.is_file() and p.name in ("config.json", "generation_config.json", "source.spm", "target.spm",
                                               "vocab.json", "target_vocab.json", "tokenizer_config.json",
                                               weights_path.name)},
        "weights": weights_path.name,
        "vocabulary": "tx ids: [<pad>, <unk>, <s> (Marian's decoder start row), </s>, then Marian's other ids in order]",
    }

    def write(tmp: Path) -> None:
        src_path, tgt_path = tokenizer_files(tmp, joint)
        src_tok.save(src_path)
        if not joint:
            tgt_tok.save(tgt_path)
        save_model(tmp / MODEL_FILE, model, cfg.to_dict())
        plain = recipe.to_plain()
        write_text_atomic(tmp / RECIPE_FILE, dump_yaml(plain))
        write_json_atomic(tmp / IMPORT_RECORD, record)

    try:
        with torch.no_grad():
            write_dir_atomic(run_dir, write)
    except OSError as err:
        raise TxError(f"{run_dir}: cannot write the run ({err.strerror or err})") from None
    parameters = sum(p.numel() for p in model.parameters())
    return ImportSummary(run_dir, weights_path, parameters, (cfg.encoder_layers, cfg.decoder_layers),
                         (cfg.src_vocab_size, cfg.tgt_vocab_size), src_tok.language_codes())


def _json_or_empty(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
