"""Behaviour of the Transformer core (txcli.model) on tiny models: each test runs in well under a second."""

import json
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from txcli.kv_cache import DecoderCache, new_cache
from txcli.model import (
    ModelConfig,
    Seq2SeqTransformer,
    attention_weights_path,
    causal_mask,
    sinusoidal_positions,
)
from txcli.process import set_threads
from txcli.tokenizer import PAD_ID

SRC_V, TGT_V = 23, 29


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors gain nothing from threads, and on a busy machine OpenMP barriers cost seconds."""
    undo = set_threads(1)
    yield
    undo()


def tiny_config(**overrides) -> ModelConfig:
    base = dict(src_vocab_size=SRC_V, tgt_vocab_size=TGT_V, d_model=32, heads=4, ff=64,
                encoder_layers=2, decoder_layers=2, dropout=0.1, max_positions=64)
    base.update(overrides)
    return ModelConfig(**base)


def tiny_model(seed=0, **overrides) -> Seq2SeqTransformer:
    torch.manual_seed(seed)
    return Seq2SeqTransformer(tiny_config(**overrides)).eval()


def random_batch(lengths, vocab, seed=1):
    """[B, max(lengths)] of real tokens (ids >= 4) followed by right padding."""
    g = torch.Generator().manual_seed(seed)
    batch = torch.full((len(lengths), max(lengths)), PAD_ID, dtype=torch.long)
    for row, n in enumerate(lengths):
        batch[row, :n] = torch.randint(4, vocab, (n,), generator=g)
    return batch


def pad_to(batch, width):
    return F.pad(batch, (0, width - batch.size(1)), value=PAD_ID)


# --------------------------------------------------------------------------- positional encoding


def test_positional_encoding_matches_formula():
    d = 16
    pe = sinusoidal_positions(200, d)
    assert pe.shape == (200, d)
    for pos in (0, 1, 7, 50, 199):
        for i in range(d // 2):
            angle = pos / 10000 ** (2 * i / d)
            assert pe[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
            assert pe[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)


def test_embedding_is_scaled_token_embedding_plus_position():
    model = tiny_model()
    tokens = random_batch([5, 3], TGT_V)
    expected = model.tgt_embed(tokens) * math.sqrt(32) + sinusoidal_positions(64, 32)[:5]
    assert torch.allclose(model.embed(tokens, model.tgt_embed), expected, atol=1e-6)
    expected_later = model.tgt_embed(tokens) * math.sqrt(32) + sinusoidal_positions(64, 32)[10:15]
    assert torch.allclose(model.embed(tokens, model.tgt_embed, start=10), expected_later, atol=1e-6)


# --------------------------------------------------------------------------- attention and masks


def test_attention_weights_path_is_softmax_of_scaled_scores():
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 3, 4, 8), torch.randn(2, 3, 5, 8), torch.randn(2, 3, 5, 8)
    mask = torch.tensor([True, True, False, True, False]).view(1, 1, 1, 5)
    out, weights = attention_weights_path(q, k, v, mask)
    scores = torch.einsum("bhqd,bhkd->bhqk", q, k) / math.sqrt(8)
    expected = torch.softmax(scores.masked_fill(~mask, -1e30), dim=-1)
    assert torch.allclose(weights, expected, atol=1e-6)
    assert torch.allclose(out, expected @ v, atol=1e-5)
    assert torch.allclose(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), atol=1e-5)


def test_training_attention_on_cpu_drops_weights_through_its_dropout_module():
    """With dropout in training, CPU attention takes the explicit path: the weights (not the
    output) go through weight_dropout, the module training swaps for its cheaper mask, and
    the causal mask still hides the future. Here the dropout is a fixed mask, so the expected
    output can be computed by hand."""
    from txcli.model import SelfAttention

    torch.manual_seed(0)
    attn = SelfAttention(8, 2, dropout=0.5).train()
    fixed = (torch.rand(3, 2, 5, 5) > 0.5).float() * 2.0

    class FixedMask(torch.nn.Module):
        def forward(self, w):
            return w * fixed

    attn.weight_dropout = FixedMask()
    x = torch.randn(3, 5, 8)
    out, _ = attn(x, causal=True)
    q, k, v = attn.split_heads(attn.qkv_proj(x), 3)
    scores = (q @ k.transpose(-2, -1) / math.sqrt(4)).masked_fill(~causal_mask(5), float("-inf"))
    expected = attn.out_proj(((torch.softmax(scores, -1) * fixed) @ v).transpose(1, 2).flatten(2))
    torch.testing.assert_close(out, expected)
    x2 = x.clone()
    x2[:, 3:] = torch.randn(3, 2, 8)  # change the future: the first three outputs stay
    torch.testing.assert_close(attn(x2, causal=True)[0][:, :3], out[:, :3])
    attn.eval()  # no dropout: the fused kernel, which ignores weight_dropout
    torch.testing.assert_close(attn(x, causal=True)[0], attn.out_proj(
        (torch.softmax(scores, -1) @ v).transpose(1, 2).flatten(2)))


def _check_rows(weights):
    assert (weights >= 0).all()
    assert torch.allclose(weights.sum(-1), torch.ones(weights.shape[:-1]), atol=1e-5)


def test_attention_weights_are_distributions_that_ignore_padded_source():
    model = tiny_model()
    src = random_batch([6, 4, 2], SRC_V)
    tgt = random_batch([5, 5, 3], TGT_V, seed=2)
    pad = src == PAD_ID
    with torch.no_grad():
        memory, enc_weights = model.encode_with_weights(src)
        _, dec = model.decode_with_weights(tgt, memory, pad)
    assert len(enc_weights) == 2 and len(dec["dec"]) == 2 and len(dec["cross"]) == 2
    for w in enc_weights:
        assert w.shape == (3, 4, 6, 6)
        _check_rows(w)
        assert (w.permute(0, 3, 1, 2)[pad] == 0).all()  # [B,S,H,Tq] rows of padded keys
    for w in dec["cross"]:
        assert w.shape == (3, 4, 5, 6)
        _check_rows(w)
        assert (w.permute(0, 3, 1, 2)[pad] == 0).all()
    for w in dec["dec"]:
        assert w.shape == (3, 4, 5, 5)
        _check_rows(w)
        above_diagonal = torch.ones(5, 5, dtype=torch.bool).triu(1)
        assert (w[..., above_diagonal] == 0).all()
        assert (w[..., ~above_diagonal] > 0).all()


def test_all_padding_source_row_gives_no_nan():
    model = tiny_model()
    src = random_batch([4, 3], SRC_V)
    src[1] = PAD_ID
    tgt = random_batch([3, 3], TGT_V)
    with torch.no_grad():
        fast = model(src, tgt)
        memory, _ = model.encode_with_weights(src)
        slow, _ = model.decode_with_weights(tgt, memory, src == PAD_ID)
    assert torch.isfinite(fast).all() and torch.isfinite(slow).all()
    assert torch.allclose(fast, slow, atol=1e-5)


def test_causal_mask_lets_query_j_see_keys_up_to_start_plus_j():
    assert causal_mask(3).tolist() == [[True, False, False], [True, True, False], [True, True, True]]
    after_two = causal_mask(2, start=2)  # two new queries after two cached steps
    assert after_two.tolist() == [[True, True, True, False], [True, True, True, True]]


def test_causal_mask_hides_future_target_tokens():
    model = tiny_model()
    src = random_batch([6, 5], SRC_V)
    tgt = random_batch([7, 7], TGT_V, seed=3)
    t = 3
    changed = tgt.clone()
    changed[:, t + 1:] = (changed[:, t + 1:] + 5) % (TGT_V - 4) + 4
    changed_at_t = tgt.clone()
    changed_at_t[:, t] = (changed_at_t[:, t] + 5) % (TGT_V - 4) + 4
    with torch.no_grad():
        base, future, present = model(src, tgt), model(src, changed), model(src, changed_at_t)
    assert torch.allclose(base[:, : t + 1], future[:, : t + 1], atol=1e-6)
    assert not torch.allclose(base[:, t + 1:], future[:, t + 1:], atol=1e-3)
    assert not torch.allclose(base[:, t], present[:, t], atol=1e-3)  # the mask does not hide too much


def test_extra_padding_leaves_real_logits_unchanged():
    model = tiny_model()
    src = random_batch([6, 3, 5], SRC_V)
    tgt = random_batch([5, 2, 4], TGT_V, seed=4)
    real = tgt != PAD_ID
    with torch.no_grad():
        base = model(src, tgt)
        padded = model(pad_to(src, 11), pad_to(tgt, 9))
        alone = model(src[1:2, :3], tgt[1:2, :2])  # the short sentence without any padding
    assert torch.allclose(base[real], padded[:, :5][real], atol=1e-5)
    assert torch.allclose(alone[0], base[1, :2], atol=1e-5)


@pytest.mark.parametrize("norm", ["pre", "post"])
def test_fast_and_weights_paths_agree(norm):
    model = tiny_model(norm=norm)
    src = random_batch([7, 4, 6], SRC_V)
    tgt = random_batch([6, 6, 3], TGT_V, seed=5)
    with torch.no_grad():
        memory_fast = model.encode(src)
        memory_slow, _ = model.encode_with_weights(src)
        logits_fast = model.decode(tgt, memory_fast, src == PAD_ID)
        logits_slow, _ = model.decode_with_weights(tgt, memory_slow, src == PAD_ID)
    assert torch.allclose(memory_fast, memory_slow, atol=1e-5)
    assert torch.allclose(logits_fast, logits_slow, atol=1e-5)


# --------------------------------------------------------------------------- incremental decoding


@pytest.mark.parametrize("norm", ["pre", "post"])
def test_cached_decoding_matches_full_forward_through_reordering(norm):
    model = tiny_model(norm=norm)
    src = random_batch([6, 4, 5], SRC_V)
    tgt = random_batch([8, 8, 8], TGT_V, seed=6)
    pad = src == PAD_ID
    with torch.no_grad():
        memory = model.encode(src)
        full = model.decode(tgt, memory, pad)
        cache = new_cache(model, memory, pad, capacity=8)
        assert isinstance(cache, DecoderCache)
        rows = torch.arange(3)  # which original sentence each cache row holds
        # the first three tokens in one call (prefix), then one token at a time
        got = model.decode(tgt[:, :3], memory, pad, cache=cache)
        assert cache.length == 3
        assert torch.allclose(got, full[:, :3], atol=1e-5)
        # reorder, grow with a duplicate, drop rows: every select swaps buffers and must keep state
        for t, index in zip(range(3, 8), ([2, 0, 1], [0, 0, 1, 2], [3, 1], None, [1, 0])):
            if index is not None:
                index = torch.tensor(index)
                cache.select(index)
                rows, memory, pad = rows[index], memory[index], pad[index]
            step = model.decode(tgt[rows, t:t + 1], memory, pad, cache=cache)
            assert step.shape == (len(rows), 1, TGT_V)
            assert cache.length == t + 1
            assert torch.allclose(step[:, 0], full[rows, t], atol=1e-5), f"step {t}"


def test_several_new_tokens_after_cached_steps_see_no_later_token():
    """T > 1 new tokens after `start` cached steps: the causal mask spelled out (causal_mask with
    diagonal=start), on the kernel and the weights path alike."""
    model = tiny_model()
    src = random_batch([6, 4], SRC_V)
    tgt = random_batch([7, 7], TGT_V, seed=13)
    pad = src == PAD_ID
    with torch.no_grad():
        memory = model.encode(src)
        full, weights = model.decode_with_weights(tgt, memory, pad)
        for with_weights in (False, True):
            cache = new_cache(model, memory, pad, capacity=7)
            model.decode(tgt[:, :2], memory, pad, cache=cache)
            if with_weights:
                got, got_weights = model.decode_with_weights(tgt[:, 2:5], memory, pad, cache=cache)
                assert torch.allclose(got_weights["dec"][1], weights["dec"][1][:, :, 2:5, :5], atol=1e-6)
            else:
                got = model.decode(tgt[:, 2:5], memory, pad, cache=cache)
            assert torch.allclose(got, full[:, 2:5], atol=1e-5)


def test_cached_decoding_with_weights_and_capacity_limit():
    model = tiny_model()
    src = random_batch([5, 3], SRC_V)
    tgt = random_batch([4, 4], TGT_V, seed=7)
    pad = src == PAD_ID
    with torch.no_grad():
        memory = model.encode(src)
        full, weights = model.decode_with_weights(tgt, memory, pad)
        cache = new_cache(model, memory, pad, capacity=4)
        for t in range(4):
            step, step_weights = model.decode_with_weights(tgt[:, t:t + 1], memory, pad, cache=cache)
            assert torch.allclose(step[:, 0], full[:, t], atol=1e-5)
            assert step_weights["dec"][0].shape == (2, 4, 1, t + 1)
            assert torch.allclose(step_weights["dec"][0][:, :, 0], weights["dec"][0][:, :, t, : t + 1], atol=1e-5)
            assert torch.allclose(step_weights["cross"][1][:, :, 0], weights["cross"][1][:, :, t], atol=1e-5)
        with pytest.raises(ValueError, match="capacity"):
            model.decode(tgt[:, :1], memory, pad, cache=cache)


def test_bf16_autocast_runs_training_and_cached_decoding():
    src = random_batch([5, 3], SRC_V)
    tgt = random_batch([4, 4], TGT_V, seed=8)
    pad = src == PAD_ID

    def training_gradients(bf16: bool) -> dict[str, torch.Tensor]:
        model = tiny_model().train()
        torch.manual_seed(5)  # the same dropout masks in both precisions
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(src, tgt)
        logits.float().sum().backward()
        return {name: p.grad for name, p in model.named_parameters()}

    bf16, fp32 = training_gradients(True), training_gradients(False)
    for name, grad in bf16.items():  # every parameter learns, in the direction fp32 training takes
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name
        assert F.cosine_similarity(grad.flatten(), fp32[name].flatten(), dim=0) > 0.99, name
    model = tiny_model()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        memory = model.encode(src)
        full = model.decode(tgt, memory, pad)
        cache = new_cache(model, memory, pad, capacity=4)
        steps = torch.cat([model.decode(tgt[:, t:t + 1], memory, pad, cache=cache) for t in range(4)], 1)
    assert full.dtype == steps.dtype == torch.bfloat16 and torch.isfinite(full).all()
    torch.testing.assert_close(steps, full)  # bf16's own tolerance: one step at a time computes the same logits


# --------------------------------------------------------------------------- variants and config


@pytest.mark.parametrize("norm", ["pre", "post"])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("share", [True, False])
def test_variants_build_run_and_backprop(norm, activation, share):
    vocab = dict(src_vocab_size=TGT_V) if share else {}
    model = tiny_model(norm=norm, activation=activation, share_embeddings=share, **vocab).train()
    src = random_batch([5, 2], TGT_V if share else SRC_V)
    tgt = random_batch([4, 3], TGT_V, seed=9)
    logits = model(src, tgt)
    assert logits.shape == (2, 4, TGT_V)
    F.cross_entropy(logits.reshape(-1, TGT_V), tgt.reshape(-1), ignore_index=PAD_ID).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    act = model.encoder[0].ff.activation
    assert isinstance(act, nn.GELU if activation == "gelu" else nn.ReLU)
    assert isinstance(model.encoder_norm, nn.LayerNorm if norm == "pre" else nn.Identity)
    assert (model.src_embed.weight is model.tgt_embed.weight) == share
    assert model.out_proj.weight is model.tgt_embed.weight  # tie_embeddings defaults to True
    assert model.out_proj.bias is None


def test_post_norm_normalises_each_sublayer_output():
    model = tiny_model(norm="post")
    with torch.no_grad():
        memory = model.encode(random_batch([6], SRC_V))
    # LN(x + sublayer(x)) with fresh LN parameters: zero mean, unit variance per position
    assert torch.allclose(memory.mean(-1), torch.zeros(1, 6), atol=1e-5)
    assert torch.allclose(memory.var(-1, unbiased=False), torch.ones(1, 6), atol=1e-3)


def test_untied_output_has_own_weight_and_bias():
    model = tiny_model(tie_embeddings=False)
    assert model.out_proj.weight is not model.tgt_embed.weight
    assert model.out_proj.bias is not None
    assert model(random_batch([3], SRC_V), random_batch([2], TGT_V)).shape == (1, 2, TGT_V)


def test_initialisation_scales():
    model = tiny_model(d_model=64, ff=128)
    assert model.tgt_embed.weight.std().item() == pytest.approx(64 ** -0.5, rel=0.1)
    bound = math.sqrt(6 / (64 + 64))  # Xavier-uniform for each d x d block of the fused W_Q,W_K,W_V
    qkv = model.encoder[0].self_attn.qkv_proj.weight
    assert qkv.abs().max().item() <= bound
    assert qkv[:64].abs().max().item() > 0.9 * bound
    assert (model.encoder[0].self_attn.qkv_proj.bias == 0).all()


def test_too_long_sequence_is_rejected():
    model = tiny_model(max_positions=8)
    with pytest.raises(ValueError, match="max_positions"):
        model.encode(random_batch([9], SRC_V))


@pytest.mark.parametrize("bad, message", [
    (dict(d_model=30, heads=4), "divisible"),
    (dict(share_embeddings=True), "share_embeddings"),
    (dict(activation="swish"), "activation"),
    (dict(ff=0), "ff"),
    (dict(encoder_layers=-1), "encoder_layers"),
    (dict(dropout=1.0), "dropout"),
    (dict(norm="sandwich"), "norm"),
])
def test_config_validation(bad, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**bad)


def test_config_dict_round_trip_and_unknown_keys():
    cfg = tiny_config(norm="post", activation="gelu", tie_embeddings=False)
    d = cfg.to_dict()
    assert ModelConfig.from_dict(json.loads(json.dumps(d))) == cfg
    with pytest.raises(ValueError, match="unknown"):
        ModelConfig.from_dict({**d, "n_layers": 6})
    with pytest.raises(ValueError, match="missing"):
        ModelConfig.from_dict({"src_vocab_size": 10})


OLD_KEYS = {"pre_norm": False, "share_embeddings": False, "tie_output": False}  # before norm, tie_embeddings


def test_config_reads_the_old_key_names_of_earlier_model_files():
    base = {k: v for k, v in tiny_config().to_dict().items() if k not in ("norm", "tie_embeddings")}
    cfg = ModelConfig.from_dict({**base, **OLD_KEYS})
    assert cfg == tiny_config(norm="post", tie_embeddings=False)
    assert ModelConfig.from_dict({**base, **OLD_KEYS, "pre_norm": True, "tie_output": True}) == tiny_config()
    with pytest.raises(ValueError, match="both 'pre_norm' and its newer name 'norm'"):
        ModelConfig.from_dict({**base, **OLD_KEYS, "norm": "pre"})


def test_model_file_with_old_config_keys_loads(tmp_path):
    """model.safetensors files store the config dict; those written before the rename say
    pre_norm/tie_output. They load as the same model, and report today's key names."""
    from txcli.checkpoint import load_model_state, save_model
    from txcli.commands.run import load_model_file

    model = tiny_model(norm="post", tie_embeddings=False)
    old = {k: v for k, v in model.cfg.to_dict().items() if k not in ("norm", "tie_embeddings")}
    save_model(tmp_path / "model.safetensors", model, {**old, **OLD_KEYS})
    loaded = load_model_file(tmp_path / "model.safetensors", torch.device("cpu"))
    assert loaded.cfg == model.cfg
    assert load_model_state(tmp_path / "model.safetensors")[0] == model.cfg.to_dict()
    src, tgt = random_batch([5, 3], SRC_V), random_batch([4, 4], TGT_V, seed=12)
    with torch.no_grad():
        assert torch.equal(loaded(src, tgt), model(src, tgt))


def test_recipe_model_section_is_the_model_config_under_the_same_names():
    from txcli import model, model_schema
    from txcli.schema import ModelSection

    assert sorted(model.ACTIVATIONS) == sorted(model_schema.ACTIVATIONS)

    section = ModelSection(d_model=64, heads=8, norm="post", activation="gelu", tie_embeddings=False)
    cfg = ModelConfig(**section.model_dump(), src_vocab_size=SRC_V, tgt_vocab_size=TGT_V)
    assert {k: getattr(cfg, k) for k in section.model_dump()} == section.model_dump()
    defaults = ModelConfig(src_vocab_size=SRC_V, tgt_vocab_size=TGT_V)
    assert all(getattr(defaults, k) == v for k, v in ModelSection().model_dump().items())


# --------------------------------------------------------------------------- training


def test_a_few_steps_on_a_copy_task_lower_the_loss():
    torch.manual_seed(0)
    cfg = ModelConfig(src_vocab_size=12, tgt_vocab_size=12, d_model=32, heads=4, ff=64,
                      encoder_layers=1, decoder_layers=1, dropout=0.0, share_embeddings=True)
    model = Seq2SeqTransformer(cfg).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    src = torch.randint(4, 12, (32, 6))
    tgt = torch.cat([torch.full((32, 1), 2), src, torch.full((32, 1), 3)], dim=1)  # <s> copy </s>

    def loss():
        logits = model(src, tgt[:, :-1])
        return F.cross_entropy(logits.reshape(-1, 12), tgt[:, 1:].reshape(-1))

    first = loss().item()
    for _ in range(60):
        optimizer.zero_grad()
        loss().backward()
        optimizer.step()
    # ln 8 = 2.08 is the best a model can do without looking at the source; copying beats it
    last = loss().item()
    assert last < 1.0 < first


def test_cache_select_before_first_step_expands_beams():
    model = tiny_model()
    src = random_batch([5, 3], SRC_V)
    tgt = random_batch([3, 3], TGT_V, seed=10)
    pad = src == PAD_ID
    beams = torch.tensor([0, 0, 0, 1, 1, 1])
    with torch.no_grad():
        memory = model.encode(src)
        full = model.decode(tgt, memory, pad)
        cache = new_cache(model, memory, pad, capacity=3)
        cache.select(beams)  # nothing decoded yet: only the cross-attention keys/values move
        assert cache.src_pad_mask.shape == (6, 5)
        for t in range(3):
            step = model.decode(tgt[beams, t:t + 1], memory[beams], pad[beams], cache=cache)
            assert torch.allclose(step[:, 0], full[beams, t], atol=1e-5)


def test_beams_sharing_one_cross_attention_row_match_expanded_rows():
    """A sentence's G beams read its cross-attention keys/values from one row (G*T queries
    together): same logits and weights as giving every beam its own copy of the row."""
    model = tiny_model()
    src = random_batch([5, 3], SRC_V)
    pad = src == PAD_ID
    G = 3
    beams = torch.arange(2).repeat_interleave(G)
    tgt = random_batch([4] * (2 * G), TGT_V, seed=11)
    with torch.no_grad():
        memory = model.encode(src)
        shared = new_cache(model, memory, pad, capacity=4)
        shared.select(beams, torch.arange(2))  # beams move, cross-attention rows stay one per sentence
        expanded = new_cache(model, memory, pad, capacity=4)
        expanded.select(beams)
        assert shared.cross_kv.size(2) == 2 and expanded.cross_kv.size(2) == 2 * G
        for t in range(4):
            a, wa = model.decode_with_weights(tgt[:, t:t + 1], None, shared.src_pad_mask, cache=shared)
            b, wb = model.decode_with_weights(tgt[:, t:t + 1], None, expanded.src_pad_mask, cache=expanded)
            assert torch.allclose(a, b, atol=1e-5), f"step {t}"
            for layer in range(len(wa["cross"])):
                assert wa["cross"][layer].shape == (2 * G, 4, 1, 5)
                assert torch.allclose(wa["cross"][layer], wb["cross"][layer], atol=1e-6)
