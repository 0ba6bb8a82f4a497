"""The model options pretrained Marian models need: SiLU, an output bias with tied embeddings,
post-norm without a final norm. Each is a recipe key, validated, off by default."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from txcli.checkpoint import load_model_state, save_model
from txcli.errors import UsageError
from txcli.model import ModelConfig, Seq2SeqTransformer
from txcli.schema import ModelSection, load_recipe

V = 19


def build(**overrides) -> Seq2SeqTransformer:
    torch.manual_seed(0)
    cfg = dict(src_vocab_size=V, tgt_vocab_size=V, d_model=16, heads=2, ff=32, encoder_layers=1,
               decoder_layers=1, dropout=0.0, max_positions=32)
    cfg.update(overrides)
    return Seq2SeqTransformer(ModelConfig(**cfg)).eval()


def test_defaults_are_todays_model():
    section = ModelSection()
    assert section.activation == "relu" and section.output_bias is False
    model = build()
    assert model.out_proj.bias is None and isinstance(model.encoder[0].ff.activation, nn.ReLU)


def test_silu_is_x_sigmoid_x_in_the_feed_forward():
    model = build(activation="silu")
    ff = model.encoder[0].ff
    x = torch.randn(2, 3, 16)
    expected = ff.fc2(ff.fc1(x) * torch.sigmoid(ff.fc1(x)))
    assert torch.allclose(ff(x), expected, atol=1e-6)


def test_output_bias_with_tied_embeddings_is_added_to_the_logits():
    model = build(output_bias=True)
    assert model.out_proj.weight is model.tgt_embed.weight and model.out_proj.bias is not None
    assert torch.count_nonzero(model.out_proj.bias) == 0  # starts unbiased
    src, tgt = torch.tensor([[5, 6, 3]]), torch.tensor([[2, 7]])
    before = model(src, tgt)
    with torch.no_grad():
        model.out_proj.bias.copy_(torch.arange(V, dtype=torch.float))
    assert torch.allclose(model(src, tgt) - before, torch.arange(V, dtype=torch.float).expand(1, 2, V), atol=1e-5)
    # it trains: the bias gets a gradient
    model.train()
    F.cross_entropy(model(src, tgt).reshape(-1, V), torch.tensor([7, 3])).backward()
    assert model.out_proj.bias.grad is not None and torch.count_nonzero(model.out_proj.bias.grad) > 0


def test_post_norm_has_no_final_norm():
    model = build(norm="post")
    assert isinstance(model.encoder_norm, nn.Identity) and isinstance(model.decoder_norm, nn.Identity)
    assert not any(name.startswith(("encoder_norm", "decoder_norm")) for name in model.state_dict())


def test_options_survive_the_model_file(tmp_path):
    model = build(activation="silu", output_bias=True, norm="post")
    save_model(tmp_path / "m.safetensors", model, model.cfg.to_dict())
    config, state, _ = load_model_state(tmp_path / "m.safetensors")
    again = Seq2SeqTransformer(ModelConfig.from_dict(config))
    again.load_state_dict(state, strict=True)
    assert again.cfg.activation == "silu" and again.cfg.output_bias


def test_old_model_files_without_the_key_load_without_a_bias():
    config = build().cfg.to_dict()
    del config["output_bias"]
    assert ModelConfig.from_dict(config).output_bias is False


@pytest.mark.parametrize("setting, message", [
    ("model.activation=swish", "model.activation"),
    ("model.output_bias=maybe", "model.output_bias"),
])
def test_recipe_refuses_bad_values_in_one_line(tiny_recipe, setting, message):
    with pytest.raises(UsageError, match=message) as err:
        load_recipe(tiny_recipe, [setting])
    assert "\n" not in str(err.value)


def test_recipe_keys_reach_the_model(tiny_recipe):
    from txcli.commands.run import model_config
    recipe = load_recipe(tiny_recipe, ["model.activation=silu", "model.output_bias=true", "model.norm=post"])
    cfg = model_config(recipe, 40, 40)
    assert (cfg.activation, cfg.output_bias, cfg.norm) == ("silu", True, "post")
