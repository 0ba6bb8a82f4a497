"""Where a training step's time goes, by op kind, against the machine's matrix-product ceiling.

tx's real loop (Trainer.fit on the recipe's corpus, batched as train_throughput.py does) runs
--warmup steps, --timed steps (wall per step), --profiled steps under torch.profiler (CPU), per
precision (train.precision) in a process of its own, with tx's oneDNN caches or the libraries'
defaults (--onednn-cache). Per step: op self times on the training thread by kind (kind_of); "no op" = wall
minus those (profiler times are elapsed on the calling thread, an op on two OpenMP threads counts
once: the rest is Python and the profiler between ops); idle = 1 - CPU / (wall x threads); FLOPs
from the batch shapes (step_flops); the ceiling: torch.mm alone on the model's linear shapes
(layers), same process, threads and dtype. How to read it: "whole step" / ceiling is the
share of the machine's matrix-product speed a step reaches, "linear GEMMs alone" / ceiling whether
the products run at full speed inside the step, the kinds table where the rest of the wall goes.

    python bench/gettext_corpus.py /tmp/gettext
    python bench/train_ops.py recipes/small.yaml --data /tmp/gettext --threads 2
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing as mp
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import load, make_stream  # puts the repository on sys.path too

KINDS = ["matrix products", "attention", "casts and copies", "elementwise", "layer norm", "softmax and loss",
         "dropout", "embedding", "optimizer and clipping", "views and shape ops", "other"]
VIEWS = {"view", "reshape", "t", "transpose", "permute", "expand", "expand_as", "as_strided", "unsqueeze", "squeeze",
         "slice", "select", "split", "split_with_sizes", "chunk", "unbind", "unflatten", "flatten", "unsafe_view",
         "alias", "detach", "narrow", "view_as", "resolve_conj", "resolve_neg", "lift_fresh"}
BY_NAME = {"linear": "matrix products", "mm": "matrix products", "addmm": "matrix products",
           "bmm": "attention", "baddbmm": "attention", "random_bits": "dropout", "native_dropout": "dropout",
           **dict.fromkeys(("to", "to_copy", "copy", "clone", "contiguous", "copy_from"), "casts and copies"),
           **dict.fromkeys(VIEWS, "views and shape ops")}
LABELS = {"tx:attention": "attention", "tx:loss": "softmax and loss", "tx:dropout": "dropout",
          "tx:clip": "optimizer and clipping", "Optimizer.step": "optimizer and clipping",
          "Optimizer.zero_grad": "optimizer and clipping"}
ELEMENTWISE = {"add", "sub", "rsub", "mul", "div", "relu", "clamp", "clamp_min", "threshold", "threshold_backward",
               "gelu", "gelu_backward", "silu", "silu_backward", "where", "exp", "log", "neg", "sqrt", "rsqrt", "pow",
               "ge", "gt", "lt", "le", "eq", "ne", "bitwise_not", "logical_not", "masked_fill", "sum", "mean",
               "scatter_add", "gather", "abs", "maximum", "minimum", "tril", "triu", "addcmul", "addcdiv"}
SOFTMAX = {"softmax", "log_softmax", "logsumexp", "softmax_backward_data", "log_softmax_backward_data",
           "cross_entropy", "nll_loss", "smoothed_cross_entropy"}
PATTERNS = [("layer_norm", "layer norm"), ("^embedding", "embedding"), ("^scaled_dot_product", "attention"),
            ("^(fused_adam|foreach_)", "optimizer and clipping")]
NODE = "autograd::engine::evaluate_function: "  # an autograd node's backward runs inside this event


def base_name(name: str) -> str:
    """aten::_to_copy -> to_copy; NativeLayerNormBackward0 -> native_layer_norm."""
    name = name.removeprefix(NODE).split("::")[-1]
    backward = re.fullmatch(r"(\w+?)Backward\d*", name)
    if backward:
        name = re.sub(r"(?<!^)(?=[A-Z])", "_", backward.group(1))
    return name.lower().strip("_")


def name_kind(name: str):
    n = base_name(name)
    return BY_NAME.get(n) or next((kind for pattern, kind in PATTERNS if re.search(pattern, n)), None)


def ancestor(e, test):
    """The innermost event around e (e included) that passes test, or None."""
    while e is not None and not test(e):
        e = e.cpu_parent
    return e


def label_of(e):
    a = ancestor(e, lambda a: a.is_user_annotation and a.name.split("#")[0] in LABELS)
    return a and a.name.split("#")[0]


def kind_of(e, forward_label: dict) -> str:
    """By the op's name where the name decides (name_kind), else by the label around it (for a
    backward op, the label around the forward op that made its autograd node, found by sequence
    number), else by its name again (elementwise, softmax, other)."""
    node = ancestor(e, lambda a: a.name.startswith(NODE))
    kind = name_kind(e.name) or (node and name_kind(node.name))
    label = forward_label.get(node.sequence_nr) if node is not None else label_of(e)
    if kind or label:
        return kind or LABELS[label]
    n = base_name(e.name)
    return ("softmax and loss" if n in SOFTMAX else "elementwise" if n in ELEMENTWISE
            else "matrix products" if n == "matmul" else "other")


def kinds_per_step(events, main_thread, steps: int):
    """{kind: ms per step} of the training thread's ops, the other threads' op ms per step, and
    the top 'other' ops."""
    ops = [e for e in events if not e.is_user_annotation]
    forward_label = {}
    for e in ops:  # each forward op's label, by the sequence number its autograd node will carry
        if e.thread == main_thread and e.sequence_nr >= 0 and ancestor(e, lambda a: a.name.startswith(NODE)) is None:
            forward_label.setdefault(e.sequence_nr, label_of(e))
    others = sum(e.self_cpu_time_total for e in ops if e.thread != main_thread) / 1000 / steps
    ms, other_names = collections.Counter(), collections.Counter()
    for e in (e for e in ops if e.thread == main_thread):
        kind = kind_of(e, forward_label)
        ms[kind] += e.self_cpu_time_total / 1000 / steps
        if kind == "other":
            other_names[e.name] += e.self_cpu_time_total / 1000 / steps
    return ms, others, other_names.most_common(4)


def layers(cfg, ns: int, nt: int) -> list:
    """(name, rows, in, out, times a step) of every linear layer; ns, nt: source and target rows."""
    D, F, V, Le, Ld = cfg.d_model, cfg.ff, cfg.tgt_vocab_size, cfg.encoder_layers, cfg.decoder_layers
    return [("enc qkv", ns, D, 3 * D, Le), ("enc out", ns, D, D, Le), ("enc fc1", ns, D, F, Le),
            ("enc fc2", ns, F, D, Le), ("dec qkv", nt, D, 3 * D, Ld), ("dec out, q", nt, D, D, 3 * Ld),
            ("dec cross kv", ns, D, 2 * D, Ld), ("dec fc1", nt, D, F, Ld), ("dec fc2", nt, F, D, Ld),
            ("output", nt, D, V, 1)]


def products_of(n: int, d_in: int, d_out: int) -> list:
    """A linear layer's products as (m, k, n, a transposed, b transposed): x @ W^T, g @ W, g^T @ x."""
    return [(n, d_in, d_out, False, True), (n, d_out, d_in, False, False), (d_out, n, d_in, True, False)]


def step_flops(cfg, B: int, S: int, T: int) -> tuple[float, float]:
    """(linear-layer, attention) FLOPs of one training step on a [B,S] -> [B,T] batch: each product
    [m,k] x [k,n] is 2*m*k*n (backward: input and weight gradients, twice the forward); attention's
    QK^T and AV 2*B*Tq*Tk*d_model each forward, x3 with the backward."""
    attention = 2 * 2 * B * cfg.d_model * (cfg.encoder_layers * S * S + cfg.decoder_layers * (T * T + T * S))
    linear = sum(count * 2 * n * d_in * d_out for _, n, d_in, d_out, count in layers(cfg, B * S, B * T))
    return 3.0 * linear, 3.0 * attention


def ceiling(products: collections.Counter, dtype, repeats: int = 10) -> dict:
    """Median seconds of torch.mm per product shape, in the given dtype."""
    import torch

    seconds = {}
    for m, k, n, ta, tb in products:
        a = torch.randn(k, m).t().to(dtype) if ta else torch.randn(m, k, dtype=dtype)
        b = torch.randn(n, k).t().to(dtype) if tb else torch.randn(k, n, dtype=dtype)
        times = []
        for _ in range(repeats + 2):  # the first two: warm-up
            start = time.perf_counter()
            torch.mm(a, b)
            times.append(time.perf_counter() - start)
        seconds[(m, k, n, ta, tb)] = statistics.median(times[2:])
    return seconds


def labelled(fn, label: str):  # fn inside a record_function range: a label for the profile, fn's result
    import torch

    def wrapper(*args, **kwargs):
        with torch.profiler.record_function(label):
            return fn(*args, **kwargs)
    return wrapper


def train_profiled(precision: str, args):
    """Train warmup + timed + profiled steps; returns (model config, batch shapes by step, clocks, profiler)."""
    import torch

    from txcli import events, fast_dropout, model, training
    from txcli.commands.run import model_config

    marks = (args.warmup, args.warmup + args.timed, args.warmup + args.timed + args.profiled)
    overrides = [*args.set, f"train.precision={precision}", f"train.max_steps={marks[2]}", "train.log_every=1",
                 "train.eval_every=1000000", "train.max_minutes=null", "train.compile=false"]
    for split in ("train", "valid", "test") if args.data else ():
        overrides += [f"data.{split}.src={args.data}/{split}.en", f"data.{split}.tgt={args.data}/{split}.de"]
    recipe, src_tok, tgt_tok = load(args.recipe, overrides, args.run_dir)
    cfg = model_config(recipe, src_tok.vocab_size, tgt_tok.vocab_size)
    torch.manual_seed(recipe.seed)
    # labels for the profile in this child process (the calls are unchanged): attention, loss, dropout, clipping
    model.attention_weights_path = labelled(model.attention_weights_path, "tx:attention")
    training.smoothed_loss_sum = labelled(training.smoothed_loss_sum, "tx:loss")
    fast_dropout.PackedDropout.forward = labelled(fast_dropout.PackedDropout.forward, "tx:dropout")
    torch.nn.utils.clip_grad_norm_ = labelled(torch.nn.utils.clip_grad_norm_, "tx:clip")
    prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], with_flops=True)
    clocks, shapes = [], []

    def on_event(e):  # a Log event after every step (log_every=1)
        if isinstance(e, events.Log) and e.step in marks:
            if e.step == marks[1]:
                prof.start()
            clocks.append((time.perf_counter(), time.process_time()))
            if e.step == marks[2]:
                prof.stop()

    with tempfile.TemporaryDirectory(prefix="tx-ops-") as out:
        trainer = training.Trainer(model.Seq2SeqTransformer(cfg), cfg.to_dict(), recipe.train,
                                   make_stream(recipe, src_tok, tgt_tok), None, Path(out), torch.device("cpu"),
                                   on_event=on_event)
        forward_loss = trainer._forward_loss

        def recording_forward_loss(src, tgt_in, tgt_out):  # the batch shapes, for the FLOP count
            shapes.append((trainer.state.step, *src.shape, tgt_in.size(1)))
            return forward_loss(src, tgt_in, tgt_out)

        trainer._forward_loss = recording_forward_loss
        trainer.fit()
    return cfg, shapes, clocks, prof


def child(precision: str, args, queue) -> None:
    """One precision: train, profile, time the ceiling; the queue gets the printed block."""
    from txcli.process import apply_process_settings

    apply_process_settings(args.threads)  # as `tx train` does (short OpenMP spins, heap, threads)
    import torch

    cfg, shapes, (a, b, c), prof = train_profiled(precision, args)
    timed = [s[1:] for s in shapes if args.warmup <= s[0] < args.warmup + args.timed]
    profiled = [s[1:] for s in shapes if s[0] >= args.warmup + args.timed]
    linear, attention = (sum(f) / args.profiled for f in zip(*(step_flops(cfg, *s) for s in profiled)))
    wall, pwall = (b[0] - a[0]) / args.timed, (c[0] - b[0]) / args.profiled
    step_rate = sum(sum(step_flops(cfg, *s)) for s in timed) / args.timed / wall
    evs = prof.events()
    main_thread = next(e.thread for e in evs if e.name == "tx:loss")
    ms, others, top_other = kinds_per_step(evs, main_thread, args.profiled)
    mine = [e for e in evs if e.thread == main_thread and not e.is_user_annotation]
    gemm, bmm = ([e for e in mine if base_name(e.name) in names] for names in (("mm", "addmm"), ("bmm",)))
    gemm_s, bmm_s = (sum(e.self_cpu_time_total for e in x) / 1e6 / args.profiled for x in (gemm, bmm))
    counted = sum(e.flops or 0 for e in gemm + bmm) / args.profiled
    ns = round(statistics.mean(B * S for B, S, _ in profiled))  # mean rows a step, for the ceiling's shapes
    nt = round(statistics.mean(B * T for B, _, T in profiled))
    products = collections.Counter()  # {product: times a step runs it}
    for _, n, d_in, d_out, count in layers(cfg, ns, nt):
        products.update(dict.fromkeys(products_of(n, d_in, d_out), count))
    seconds = ceiling(products, torch.bfloat16 if precision == "bf16" else torch.float32)
    product_flops = sum(c * 2 * m * k * n for (m, k, n, _, _), c in products.items())
    ceil = product_flops / sum(c * seconds[p] for p, c in products.items())  # over torch.mm's time alone for them
    cpu, ops = (b[1] - a[1]) / (b[0] - a[0]), sum(ms.values()) / 1000
    lines = [f"== {precision}: {len(profiled)} profiled batches, {ns} source / {nt} target rows a step (padded)"]
    say = lines.append
    say(f"wall per step {wall * 1000:.0f} ms without the profiler, {pwall * 1000:.0f} ms with it; "
        f"{sum(B * T for B, _, T in timed) / args.timed / wall:,.0f} padded target tokens/s; CPU/wall {cpu:.2f} "
        f"(profiled {(c[1] - b[1]) / (c[0] - b[0]):.2f}): idle {1 - cpu / args.threads:.0%} of {args.threads} threads")
    say(f"{'kind (training thread, self time)':<38}{'ms/step':>8}{'share':>7}  (of the profiled step)")
    for kind in KINDS:
        say(f"{kind:<38}{ms.get(kind, 0.0):>8.1f}{ms.get(kind, 0.0) / 1000 / pwall:>7.1%}")
    say(f"{'all ops':<38}{ops * 1000:>8.1f}{ops / pwall:>7.1%}  (other threads' ops, data feed: {others:.1f} ms)")
    say(f"{'no op (Python, profiler): wall - ops':<38}{(pwall - ops) * 1000:>8.1f}{1 - ops / pwall:>7.1%}")
    say("largest 'other': " + ", ".join(f"{n} {t:.1f}" for n, t in top_other))
    say(f"FLOPs a step: {(linear + attention) / 1e9:.1f} G from the shapes (linear {linear / 1e9:.1f}, attention "
        f"{attention / 1e9:.2f}); the profiler's mm/addmm/bmm count: {counted / 1e9:.1f} G")
    say(f"ceiling (torch.mm on the model's linear shapes): {ceil / 1e9:.0f} GFLOP/s; at it the linear products "
        f"take {linear / ceil * 1000:.0f} ms, {linear / ceil / pwall:.0%} of the profiled step")
    say(f"whole step (unprofiled): {step_rate / 1e9:.0f} GFLOP/s = {step_rate / ceil:.1%} of the ceiling")
    say(f"linear GEMMs alone (mm/addmm, {gemm_s * 1000:.0f} ms): {linear / gemm_s / 1e9:.0f} GFLOP/s = "
        f"{linear / gemm_s / ceil:.0%} of the ceiling; " + (f"attention's bmm {bmm_s * 1000:.0f} ms, "
        f"{attention / bmm_s / 1e9:.0f} GFLOP/s" if bmm_s else "attention in fused SDPA kernels (no bmm)"))
    say(f"ceiling by layer, GFLOP/s forward / input gradient / weight gradient ({precision}):")
    for name, n, d_in, d_out, _ in layers(cfg, ns, nt):
        say(f"  {name:<13}[{n},{d_in}] x [{d_in},{d_out}]: " + " / ".join(
            f"{2 * p[0] * p[1] * p[2] / seconds[p] / 1e9:.0f}" for p in products_of(n, d_in, d_out)))
    queue.put("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe")
    parser.add_argument("--data", help="DIR with {train,valid,test}.{en,de} in place of the recipe's data")
    parser.add_argument("--run-dir", help="where the tokenizer is trained or found (default: a temporary directory)")
    parser.add_argument("--precisions", default="bf16,fp32")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--timed", type=int, default=10, help="steps timed without the profiler")
    parser.add_argument("--profiled", type=int, default=10)
    parser.add_argument("--onednn-cache", choices=("tx", "default"), default="tx",
                        help="oneDNN's and ideep's primitive caches: tx's process settings (txcli/onednn.py), "
                             "or the libraries' defaults (1024 each)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    if args.onednn_cache == "default":  # before any torch loads (children); process settings leave them alone
        os.environ.update(ONEDNN_PRIMITIVE_CACHE_CAPACITY="1024", LRU_CACHE_CAPACITY="1024")
    print(f"{args.recipe}, {args.threads} threads, oneDNN caches: {args.onednn_cache}")
    with tempfile.TemporaryDirectory(prefix="tx-ops-") as tmp:
        args.run_dir = args.run_dir or tmp
        for precision in args.precisions.split(","):
            queue = mp.get_context("spawn").Queue()
            proc = mp.get_context("spawn").Process(target=child, args=(precision, args, queue))
            proc.start()
            proc.join()  # the result is a few kB: it fits the pipe, so the child can exit before it is read
            if queue.empty():
                raise SystemExit(f"the {precision} run exited {proc.exitcode} without a result")
            print(f"\n{queue.get()}\n(load average {os.getloadavg()[0]:.1f} at the end)", flush=True)


if __name__ == "__main__":
    main()
