"""A tx run as a CTranslate2 model directory: `tx export ctranslate2` and the cache that
`--engine ctranslate2` keeps in RUN_DIR/ctranslate2/.

The directory holds what CTranslate2 writes (model.bin, config.json, the vocabularies as token
strings in id order), the run's tokenizer files, and EXPORT_INFO: the recipe's decode defaults,
the maximum source length, and the size and mtime of the weights it was made from (a cache is
reused while they are unchanged). It is built in a temp folder and renamed into place; nothing
is pickled.

Checking an export (`export_info`, `cached_export` when the cache is current) imports neither
torch nor ctranslate2's converters; making one does (ctranslate2.specs imports torch).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Optional

from ..errors import TxError, UsageError

EXPORT_INFO = "tx_export.json"
CACHE_DIR = "ctranslate2"  # inside a run directory
FORMAT = "tx-ctranslate2/1"
QUANTIZATIONS = ("none", "int8", "int8_float32", "int8_float16", "int8_bfloat16", "float16", "bfloat16")
SRC_TOKENIZER, TGT_TOKENIZER = "src_tokenizer.json", "tgt_tokenizer.json"
LAYER_NORM_EPS = 1e-5  # torch.nn.LayerNorm's default, which the tx model uses


def missing_ctranslate2() -> UsageError:
    return UsageError("ctranslate2 is not installed: pip install -e '.[ct2]' (or pip install ctranslate2)")


def weights_stamp(path: Path) -> dict:
    st = Path(path).stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def export_info(model_dir: Path) -> Optional[dict]:
    """The export's record, or None when `model_dir` is not a complete tx export."""
    path = Path(model_dir) / EXPORT_INFO
    if not (path.is_file() and (Path(model_dir) / "model.bin").is_file()):
        return None
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        return None
    return info if isinstance(info, dict) and info.get("format") == FORMAT else None


def _model_file(run_dir: Path) -> Path:
    return Path(run_dir) / "model.safetensors"  # checkpoint.MODEL_FILE; checkpoint.py imports torch


def cached_export(run_dir: Path) -> tuple[Path, dict, bool]:
    """(directory, record, made now) of RUN_DIR/ctranslate2: reused while the run's weights are
    the ones it was made from, else exported again (float32: the compute type is chosen at load)."""
    run_dir = Path(run_dir)
    target = run_dir / CACHE_DIR
    weights = _model_file(run_dir)
    if not weights.is_file():
        raise TxError(f"{weights}: missing (train a model first: tx train RECIPE)")
    info = export_info(target)
    if info is not None and info.get("weights") == weights_stamp(weights) and info.get("quantization") == "none":
        return target, info, False
    try:
        export_run(run_dir, target, "none")
    except OSError as err:  # a read-only run directory, a full disk
        raise TxError(f"{target}: cannot write the CTranslate2 export ({err.strerror}); write one elsewhere with "
                      f"`tx export ctranslate2 {run_dir} OUT_DIR` and translate OUT_DIR") from None
    return target, export_info(target), True


# --------------------------------------------------------------------------- making an export


def _read_weights(path: Path) -> tuple[dict, dict]:
    """(model config dict, name -> numpy array) from a tx weights file, tied names resolved to
    the same array (the file stores a tied tensor once and lists its other names)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="np") as f:
            meta = dict(f.metadata() or {})
            arrays = {name: f.get_tensor(name) for name in f.keys()}
    except (SafetensorError, OSError, ValueError, TypeError) as err:
        raise TxError(f"{path}: damaged or truncated weights file ({err})") from None
    for name, target in json.loads(meta.get("tx.aliases", "{}")).items():
        arrays[name] = arrays[target]
    try:
        config = json.loads(meta["tx.model_config"])
    except (KeyError, json.JSONDecodeError):
        raise TxError(f"{path}: not a tx model file (no model configuration in its metadata)") from None
    return config, arrays


def architecture(config: dict, arrays: dict) -> dict:
    """The few facts of the model's shape the export needs, read in this one place: ModelConfig
    field names change (pre_norm -> norm, tie_output/share_embeddings -> tie_embeddings), so
    what the weights themselves show (final norms, tying, layer counts) is read from them."""
    def count(stack: str) -> int:
        return len({name.split(".")[1] for name in arrays if name.startswith(stack + ".")})

    return {
        "encoder_layers": count("encoder"),
        "decoder_layers": count("decoder"),
        "heads": int(config["heads"]),
        "activation": config.get("activation", "relu"),
        "pre_norm": "encoder_norm.weight" in arrays,  # only a pre-norm model ends its stacks with a norm
        "d_model": int(arrays["src_embed.weight"].shape[1]),
        "max_positions": int(config.get("max_positions", 1024)),
    }


def sinusoids(n_positions: int, d_model: int):
    """tx's positional table (model.sinusoidal_positions) in numpy: sin on even columns, cos on
    odd ones, position 0 first. CTranslate2's built-in table is [sin | cos] halves from position
    1, so the export stores this one."""
    import numpy as np

    pos = np.arange(n_positions, dtype=np.float64)[:, None]
    angle = pos / np.power(10000.0, np.arange(0, d_model, 2, dtype=np.float64) / d_model)
    pe = np.zeros((n_positions, d_model), dtype=np.float64)
    pe[:, 0::2] = np.sin(angle)
    pe[:, 1::2] = np.cos(angle[:, : d_model // 2])
    return pe.astype(np.float32)


def build_spec(config: dict, arrays: dict, src_tokens: list[str], tgt_tokens: list[str]):
    """A ctranslate2 TransformerSpec holding the tx model's weights."""
    from ctranslate2.specs import common_spec, transformer_spec

    arch = architecture(config, arrays)
    activations = {"relu": common_spec.Activation.RELU, "gelu": common_spec.Activation.GELU,  # nn.GELU: exact erf
                   "silu": common_spec.Activation.SWISH}  # x * sigmoid(x), as nn.SiLU
    if arch["activation"] not in activations:
        raise UsageError(f"activation {arch['activation']!r}: no CTranslate2 equivalent")
    spec = transformer_spec.TransformerSpec.from_config(
        (arch["encoder_layers"], arch["decoder_layers"]), arch["heads"], pre_norm=arch["pre_norm"],
        activation=activations[arch["activation"]])
    spec.config.layer_norm_epsilon = LAYER_NORM_EPS

    def linear(target, name: str) -> None:
        target.weight = arrays[name + ".weight"]  # [out, in], as CTranslate2 stores it too
        if name + ".bias" in arrays:
            target.bias = arrays[name + ".bias"]

    def norm(target, name: str) -> None:
        target.gamma, target.beta = arrays[name + ".weight"], arrays[name + ".bias"]

    positions = sinusoids(arch["max_positions"], arch["d_model"])
    for side, stack in (("encoder", spec.encoder), ("decoder", spec.decoder)):
        stack.scale_embeddings = True  # x sqrt(d_model), as tx's embed() does
        stack.position_encodings.encodings = positions
        if arch["pre_norm"]:
            norm(stack.layer_norm, f"{side}_norm")
    # the same array object for tied tables: CTranslate2 stores it once and aliases the rest
    spec.encoder.embeddings[0].weight = arrays["src_embed.weight"]
    spec.decoder.embeddings.weight = arrays["tgt_embed.weight"]
    linear(spec.decoder.projection, "out_proj")

    for i, layer in enumerate(spec.encoder.layer):
        p = f"encoder.{i}"
        linear(layer.self_attention.linear[0], f"{p}.self_attn.qkv_proj")  # fused q, k, v rows
        linear(layer.self_attention.linear[1], f"{p}.self_attn.out_proj")
        norm(layer.self_attention.layer_norm, f"{p}.self_attn_res.norm")
        linear(layer.ffn.linear_0, f"{p}.ff.fc1")
        linear(layer.ffn.linear_1, f"{p}.ff.fc2")
        norm(layer.ffn.layer_norm, f"{p}.ff_res.norm")
    for i, layer in enumerate(spec.decoder.layer):
        p = f"decoder.{i}"
        linear(layer.self_attention.linear[0], f"{p}.self_attn.qkv_proj")
        linear(layer.self_attention.linear[1], f"{p}.self_attn.out_proj")
        norm(layer.self_attention.layer_norm, f"{p}.self_attn_res.norm")
        linear(layer.attention.linear[0], f"{p}.cross_attn.q_proj")
        linear(layer.attention.linear[1], f"{p}.cross_attn.kv_proj")  # fused k, v rows
        linear(layer.attention.linear[2], f"{p}.cross_attn.out_proj")
        norm(layer.attention.layer_norm, f"{p}.cross_attn_res.norm")
        linear(layer.ffn.linear_0, f"{p}.ff.fc1")
        linear(layer.ffn.linear_1, f"{p}.ff.fc2")
        norm(layer.ffn.layer_norm, f"{p}.ff_res.norm")
    spec.register_source_vocabulary(src_tokens)
    spec.register_target_vocabulary(tgt_tokens)
    return spec, arch


def _vocabulary(tokenizer_path: Path) -> list[str]:
    from ..tokenizer import load_tokenizer

    tok = load_tokenizer(tokenizer_path)  # either kind; ids name the same tokens on both sides
    by_id = {i: t for t, i in tok.get_vocab().items()}
    tokens = [by_id.get(i) for i in range(tok.vocab_size)]
    if None in tokens or len(set(tokens)) != len(tokens):
        raise TxError(f"{tokenizer_path}: ids are not one token each; cannot name them for CTranslate2")
    return tokens


def export_run(run_dir: Path, out_dir: Path, quantization: str = "none") -> dict:
    """Write the CTranslate2 directory of a run at out_dir (atomically); returns its record."""
    from ..checkpoint import MODEL_FILE, RECIPE_FILE, tokenizer_files, write_dir_atomic, write_json_atomic
    from ..options import RECIPE_KEYS, check_choice
    from ..schema import read_saved_recipe

    check_choice("--quantization", quantization, QUANTIZATIONS)
    try:
        import ctranslate2  # noqa: F401
    except ImportError:
        raise missing_ctranslate2() from None
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if not (run_dir / RECIPE_FILE).is_file():
        raise UsageError(f"{run_dir}: not a tx run directory (no {RECIPE_FILE})")
    recipe = read_saved_recipe(run_dir / RECIPE_FILE)
    weights = run_dir / MODEL_FILE
    if not weights.is_file():
        raise TxError(f"{weights}: missing (train a model first: tx train RECIPE)")
    stamp = weights_stamp(weights)
    config, arrays = _read_weights(weights)
    src_path, tgt_path = tokenizer_files(run_dir, recipe.tokenizer.joint)
    for path in (src_path, tgt_path):
        if not path.is_file():
            raise TxError(f"{path}: missing (run `tx train-tokenizer` or `tx train` first)")
    try:
        spec, arch = build_spec(config, arrays, _vocabulary(src_path), _vocabulary(tgt_path))
        spec.validate()
        spec.optimize(quantization=None if quantization == "none" else quantization)
    except (KeyError, ValueError) as err:
        raise TxError(f"{weights}: weights do not fit a CTranslate2 Transformer ({err})") from None
    info = {
        "format": FORMAT, "weights": stamp, "source": str(weights.resolve()), "quantization": quantization,
        "decode": {k: getattr(recipe.decode, k) for k in RECIPE_KEYS}, "max_len": recipe.data.max_len,
        "max_positions": arch["max_positions"], "architecture": arch,
        "tokenizers": {"src": SRC_TOKENIZER, "tgt": TGT_TOKENIZER},
    }

    def write(tmp: Path) -> None:
        spec.save(str(tmp))
        shutil.copyfile(src_path, tmp / SRC_TOKENIZER)
        shutil.copyfile(tgt_path, tmp / TGT_TOKENIZER)
        write_json_atomic(tmp / EXPORT_INFO, info)  # last: its presence marks a complete export

    if out_dir.exists() and not (out_dir.is_dir() and (export_info(out_dir) is not None or not any(out_dir.iterdir()))):
        raise UsageError(f"{out_dir}: exists and is not a tx CTranslate2 export; refusing to replace it")
    write_dir_atomic(out_dir, write)
    return info
