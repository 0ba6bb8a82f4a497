"""The rules of a model configuration, without torch (so `tx recipe check` stays fast): the
checks, shared by the recipe's `model` section and `model.ModelConfig`, and the key names that
model files written before the two took the same names still hold."""

from typing import Optional

NORMS = ("pre", "post")
ACTIVATIONS = ("relu", "gelu", "silu")
SIZES = ("src_vocab_size", "tgt_vocab_size", "d_model", "heads", "ff", "encoder_layers",
         "decoder_layers", "max_positions")

# old key -> (new key, old value -> new value)
OLD_KEYS = {"pre_norm": ("norm", lambda pre: "pre" if pre else "post"),
            "tie_output": ("tie_embeddings", lambda tied: tied)}


def check_heads_divide(d_model: int, heads: int) -> None:
    """Multi-head attention splits d_model into `heads` subspaces of equal width d_model/heads."""
    if d_model % heads:
        raise ValueError(f"d_model ({d_model}) must be divisible by heads ({heads})")


def check_config(cfg) -> None:
    """Raise ValueError for a ModelConfig no model can be built from (e.g. a damaged file's)."""
    for name in SIZES:
        if getattr(cfg, name) <= 0:
            raise ValueError(f"{name} must be positive, got {getattr(cfg, name)}")
    check_heads_divide(cfg.d_model, cfg.heads)
    if not 0.0 <= cfg.dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {cfg.dropout}")
    for name, allowed in (("norm", NORMS), ("activation", ACTIVATIONS)):
        if getattr(cfg, name) not in allowed:
            raise ValueError(f"{name} must be one of {list(allowed)}, got {getattr(cfg, name)!r}")
    if cfg.share_embeddings and cfg.src_vocab_size != cfg.tgt_vocab_size:
        raise ValueError("share_embeddings needs equal source and target vocabulary sizes, got "
                         f"{cfg.src_vocab_size} and {cfg.tgt_vocab_size}")
    if not 0 <= cfg.pad_id < min(cfg.src_vocab_size, cfg.tgt_vocab_size):
        raise ValueError(f"pad_id {cfg.pad_id} is outside the vocabulary")


def max_positions(max_len: int) -> int:
    """Rows of the positional-encoding table for training pairs of up to max_len subwords (with
    BOS and EOS around them); at least 1024, so that longer inputs still translate."""
    return max(1024, max_len + 2)


def shares_embeddings(tie_embeddings: bool, joint_tokenizer: bool) -> bool:
    """Source and target share one embedding table when the output projection is tied to the
    target embeddings and one tokenizer serves both sides: tie_embeddings implies sharing then."""
    return tie_embeddings and joint_tokenizer


def first_difference(mine: dict, theirs: dict) -> Optional[str]:
    """The first key (mine's order, then theirs') whose value differs between two configurations
    (model configs, or recipe sections as dicts); None if they are the same."""
    keys = [*mine, *(k for k in theirs if k not in mine)]
    return next((k for k in keys if mine.get(k) != theirs.get(k)), None)


def current_keys(config: dict, known: Optional[set] = None) -> dict:
    """A config dict with any old key names (OLD_KEYS) replaced by today's; with `known` (the
    config's field names), also a ValueError for unknown keys or missing vocabulary sizes."""
    config = dict(config)
    for old, (new, convert) in OLD_KEYS.items():
        if old in config:
            if new in config:
                raise ValueError(f"model config has both {old!r} and its newer name {new!r}")
            config[new] = convert(config.pop(old))
    if known is not None:
        unknown, missing = set(config) - known, {"src_vocab_size", "tgt_vocab_size"} - set(config)
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        if missing:
            raise ValueError(f"missing model config keys: {sorted(missing)}")
    return config
