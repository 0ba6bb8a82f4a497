"""Checks on model hyperparameters made both by the recipe schema (txcli.recipe) and by the
model's own config (txcli.model). No torch here, so that `tx recipe check` stays fast."""


def check_heads_divide(d_model: int, heads: int) -> None:
    """Multi-head attention splits d_model into `heads` subspaces of equal width d_model/heads."""
    if d_model % heads:
        raise ValueError(f"d_model ({d_model}) must be divisible by heads ({heads})")
