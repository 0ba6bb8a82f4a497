"""tx translate / score / evaluate on a tiny untrained run: line alignment, formats, errors."""

from __future__ import annotations

import io
import json
import os
import select
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from txcli.checkpoint import MODEL_FILE
from txcli.commands.run import open_run
from txcli.commands.run import run_decoding as resolve_decoding
from txcli.commands.score import token_logprobs
from txcli.commands.translate import Formatter, translate_stream
from txcli.options import DecodeOptions
from txcli.translation import token_batches
from txcli.engines import ENGINES, open_engine
from txcli.streams import line_chunks, open_output
from txcli.errors import TxError, UsageError
from txcli.tokenizer import EOS_ID

from .conftest import run_tx

pytestmark = pytest.mark.usefixtures("one_thread")
SENTENCES = ["the dog sees a cat", "big red house", "a small green tree runs in the house with the cat",
             "cat", "the big dog likes the small red cat on the tree"]


@pytest.fixture
def run(tiny_run: Path):
    return open_run(tiny_run, device="cpu")


@pytest.fixture(params=ENGINES)
def engine(request) -> str:
    """The line guarantees hold for every engine (ctranslate2 is in the test extra: not skipped)."""
    return request.param


def open_for(run_dir: Path, engine: str, **options):
    """An engine on the tiny run; outputs are kept short (at most 4 tokens) so the untrained model is quick."""
    return open_engine(engine, run_dir, DecodeOptions(**{"max_len_a": 0.0, "max_len_b": 4, **options}), "cpu", 1)


def translate_text(run_dir: Path, text: str, fmt: str = "text", tokens: bool = False, engine: str = "torch",
                   **options) -> tuple[list[str], object]:
    """Translate in-process through an engine."""
    translator = open_for(run_dir, engine, **options)
    sink = io.BytesIO()
    summary = translate_stream(translator, io.BytesIO(text.encode("utf-8")), sink, Formatter(translator, fmt, tokens))
    return sink.getvalue().decode("utf-8").split("\n")[:-1], summary


# --------------------------------------------------------------------------- lines in, lines out


def test_empty_blank_and_long_lines_keep_their_place(tiny_run, engine):
    long = " ".join(["the big dog"] * 40)  # far past max_len 32 subwords
    lines, summary = translate_text(tiny_run, f"{SENTENCES[0]}\n\n   \n{long}\n{SENTENCES[1]}\n\t\n", engine=engine)
    assert len(lines) == 6 and summary.lines == 6 and summary.translated == 3
    assert lines[1] == "" and lines[2] == "" and lines[5] == ""
    assert summary.truncated == 1
    alone, _ = translate_text(tiny_run, SENTENCES[0] + "\n", engine=engine)
    assert lines[0] == alone[0]


def test_a_last_line_without_newline_and_crlf_count():
    chunks = list(line_chunks(io.BytesIO(b"a\r\nb\n\nc"), max_lines=2))
    assert chunks == [[b"a\r", b"b"], [b"", b"c"]]
    assert list(line_chunks(io.BytesIO(b""))) == []


def test_chunks_and_batches_restore_the_input_order(tiny_run, engine):
    text = "".join(SENTENCES[i % 5] + "\n" for i in range(23))
    sink = io.BytesIO()
    translator = open_for(tiny_run, engine, batch_tokens=40, beam=2)
    translate_stream(translator, io.BytesIO(text.encode()), sink, Formatter(translator, "jsonl", False), chunk_lines=7)
    records = [json.loads(line) for line in sink.getvalue().decode().splitlines()]
    assert [r["line"] for r in records] == list(range(1, 24))
    assert [r["src"] for r in records] == [SENTENCES[i % 5] for i in range(23)]
    by_source = {}
    for r in records:  # the same sentence always gets the same translation, wherever it was batched
        assert by_source.setdefault(r["src"], r["hyps"]) == r["hyps"]


def test_output_to_a_device_is_written_not_replaced(tmp_path: Path):
    with open_output(Path(os.devnull), None) as f:
        f.write(b"thrown away\n")
    assert not Path(os.devnull).is_file()
    with open_output(tmp_path / "out.txt", None) as f:
        f.write(b"kept\n")
    assert (tmp_path / "out.txt").read_bytes() == b"kept\n" and len(list(tmp_path.iterdir())) == 1


def test_token_batches_sort_by_length_and_respect_the_budget():
    lengths = [3, 10, 4, 10, 2, 25]
    batches = token_batches(lengths, 20)
    assert sorted(i for b in batches for i in b) == list(range(6))
    for b in batches:
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 20
    assert batches[0] == [5]  # too long for the budget: alone


def test_jsonl_nbest_and_tokens(tiny_run, engine):
    lines, _ = translate_text(tiny_run, SENTENCES[0] + "\n\n", fmt="jsonl", beam=4, nbest=3, engine=engine)
    first, empty = json.loads(lines[0]), json.loads(lines[1])
    assert first["src"] == SENTENCES[0] and len(first["hyps"]) == 3
    scores = [h["score"] for h in first["hyps"]]
    assert scores == sorted(scores, reverse=True)
    alpha = open_run(tiny_run, device="cpu").recipe.decode.alpha
    for h in first["hyps"]:  # torch: score = logprob / GNMT penalty, the length counting </s>
        if engine == "torch":  # (CTranslate2's own penalty: tests/test_engines.py)
            assert h["score"] == pytest.approx(h["logprob"] / ((5 + h["length"] + 1) / 6) ** alpha, abs=2e-4)
    assert empty == {"line": 2, "src": "", "hyps": []}
    text, _ = translate_text(tiny_run, SENTENCES[0] + "\n", beam=4, nbest=3, engine=engine)
    assert text[0].split("\t") == [h["text"] for h in first["hyps"]]
    shown, _ = translate_text(tiny_run, SENTENCES[0] + "\n", fmt="jsonl", tokens=True, beam=4, nbest=3, engine=engine)
    tok = open_run(tiny_run, device="cpu").tgt_tok
    for plain, with_tokens in zip(first["hyps"], json.loads(shown[0])["hyps"]):
        pieces = with_tokens["text"].split(" ") if with_tokens["text"] else []
        assert len(pieces) == plain["length"] == with_tokens["length"]
        ids = [tok.hf.token_to_id(p) for p in pieces]
        assert None not in ids and tok.decode(ids) == plain["text"]


def test_bf16_decodes_close_to_fp32_and_sampling_repeats_with_its_seed(tiny_run):
    fp32, _ = translate_text(tiny_run, "\n".join(SENTENCES) + "\n", fmt="jsonl", precision="fp32")
    bf16, _ = translate_text(tiny_run, "\n".join(SENTENCES) + "\n", fmt="jsonl", precision="bf16")
    assert len(bf16) == 5
    pairs = [(json.loads(a)["hyps"][0], json.loads(b)["hyps"][0]) for a, b in zip(fp32, bf16)]
    same = [(a, b) for a, b in pairs if a["text"] == b["text"]]
    assert same, "bf16 found none of fp32's translations"
    # bf16 really ran (its rounding moves the scores) and stayed close to fp32
    assert any(a["logprob"] != b["logprob"] for a, b in same)
    assert all(abs(a["logprob"] - b["logprob"]) < 0.1 * (a["length"] + 1) for a, b in same)
    a, _ = translate_text(tiny_run, SENTENCES[0] + "\n", sample=True, nbest=4, top_k=5, seed=3)
    b, _ = translate_text(tiny_run, SENTENCES[0] + "\n", sample=True, nbest=4, top_k=5, seed=3)
    assert a == b and len(a[0].split("\t")) == 4


def test_command_line_values_override_the_recipe(run):
    d = resolve_decoding(run, DecodeOptions())
    assert (d.search.beam, d.search.max_len_b) == (run.recipe.decode.beam, run.recipe.decode.max_len_b)
    d = resolve_decoding(run, DecodeOptions(beam=7, alpha=0.0, max_len_b=3, batch_tokens=99))
    assert (d.search.beam, d.search.alpha, d.search.max_len_b, d.batch_tokens) == (7, 0.0, 3, 99)
    with pytest.raises(UsageError, match="nbest"):
        resolve_decoding(run, DecodeOptions(beam=2, nbest=3))
    with pytest.raises(UsageError, match="--beam 0"):
        resolve_decoding(run, DecodeOptions(beam=0))


def test_invalid_utf8_names_the_line(tiny_run, engine):
    sink = io.BytesIO()
    translator = open_for(tiny_run, engine)
    with pytest.raises(TxError, match=r"<stdin>: line 3: not valid UTF-8"):
        translate_stream(translator, io.BytesIO(b"a\nb\n\xff\xfe\nd\n"), sink, Formatter(translator, "text", False))
    assert sink.getvalue().count(b"\n") == 2  # the lines before it were translated and written


# --------------------------------------------------------------------------- the real command line


def test_three_lines_in_three_lines_out(tiny_run: Path, engine):
    result = subprocess.run([sys.executable, "-m", "txcli", "translate", str(tiny_run), "--threads", "1",
                             "--engine", engine],
                            input="a\n\nb\n", capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.split("\n")
    assert len(lines) == 4 and lines[-1] == "" and lines[1] == ""  # three lines, the empty one kept


def test_ten_thousand_lines_stay_aligned(tiny_run: Path, tmp_path: Path, engine):
    short = ["the dog sees a cat", "big red house", "cat", "a dog", "the cat runs"]
    lines = [short[i % 5] if i % 7 else "" for i in range(10_000)]
    lines[5000] = " ".join(["cat"] * 100)
    src = tmp_path / "in.txt"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = run_tx("translate", str(tiny_run), "--input", str(src), "--output", str(tmp_path / "out.txt"),
                    "--beam", "1", "--max-len-a", "0", "--max-len-b", "2", "--threads", "1", "--engine", engine)
    assert result.returncode == 0, result.stderr
    out = (tmp_path / "out.txt").read_text(encoding="utf-8").split("\n")
    assert len(out) == 10_001 and out[-1] == ""
    for i, (line, translation) in enumerate(zip(lines, out)):
        if line == "":
            assert translation == "", i
    first = {lines[i]: out[i] for i in range(1, 6)}
    assert all(out[i] == first[lines[i]] for i in range(10_000) if lines[i] in first)
    warnings = [line for line in result.stderr.splitlines() if "warning" in line and "CTranslate2" not in line]
    assert len(warnings) == 1 and "1 lines longer" in result.stderr, result.stderr


def test_output_flows_through_a_pipe_before_input_ends(tiny_run: Path, engine):
    proc = subprocess.Popen([sys.executable, "-m", "txcli", "translate", str(tiny_run), "--threads", "1",
                             "--engine", engine],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        proc.stdin.write(b"the dog sees a cat\n")
        proc.stdin.flush()
        ready, _, _ = select.select([proc.stdout], [], [], 120)
        assert ready, "no translation before the input ended"
        assert proc.stdout.readline().endswith(b"\n")
        proc.stdin.write(b"cat\n")
        proc.stdin.close()
        rest = proc.stdout.read()
        assert proc.wait(timeout=120) == 0 and rest.count(b"\n") == 1
    finally:
        proc.kill()


def test_missing_and_broken_run_dirs_are_one_line_errors(tiny_run: Path, tmp_path: Path, engine):
    result = run_tx("translate", str(tmp_path / "nope"), "--engine", engine, input="a\n")
    assert result.returncode == 1 and "no such run directory" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    (tiny_run / MODEL_FILE).write_bytes(b"not weights")
    result = run_tx("translate", str(tiny_run), "--engine", engine, input="a\n")
    assert result.returncode == 1 and "damaged or truncated" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_bad_utf8_on_stdin_exits_with_the_line_number(tiny_run: Path, engine):
    result = run_tx("translate", str(tiny_run), "--threads", "1", "--engine", engine, input=b"a\n\xff\n")
    assert result.returncode == 1 and b"line 2: not valid UTF-8" in result.stderr


# --------------------------------------------------------------------------- score and evaluate


def test_scores_do_not_depend_on_the_batch(run):
    enc = run.src_tok.encode
    pairs = [(enc(s) + [EOS_ID], enc(s.upper())) for s in SENTENCES] + [([EOS_ID], [])]
    together = token_logprobs(run, pairs, batch_tokens=10_000)
    alone = [token_logprobs(run, [p], batch_tokens=10_000)[0] for p in pairs]
    for t, a, (_, tgt) in zip(together, alone, pairs):
        assert len(t) == len(tgt) + 1 and t == pytest.approx(a, abs=1e-4)
    # by hand: log p(token | prefix) under teacher forcing
    src, tgt = pairs[0]
    logits = run.model(torch.tensor([src]), torch.tensor([[2] + tgt]))[0].log_softmax(-1)
    assert together[0] == pytest.approx(logits.gather(1, torch.tensor([tgt + [EOS_ID]]).T).view(-1).tolist(), abs=1e-4)


def test_score_command_one_line_per_pair(tiny_run: Path, tmp_path: Path):
    (tmp_path / "s").write_text("the dog\n\nbig cat\n")
    (tmp_path / "t").write_text("DOG THE\n\nCAT BIG\n")
    result = run_tx("score", str(tiny_run), "--src", str(tmp_path / "s"), "--tgt", str(tmp_path / "t"),
                    "--format", "jsonl", "--tokens", "--threads", "1")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(records) == 3 and records[1]["tokens"] == ["</s>"]
    for r in records:
        assert r["logprob"] == pytest.approx(sum(r["token_logprobs"]), abs=1e-3) and r["logprob"] < 0
    (tmp_path / "t").write_text("DOG THE\n")
    result = run_tx("score", str(tiny_run), "--src", str(tmp_path / "s"), "--tgt", str(tmp_path / "t"))
    assert result.returncode == 2 and "has 3 lines but" in result.stderr


def test_evaluate_hypotheses_and_a_run(tiny_run: Path, tmp_path: Path):
    ref = tmp_path / "ref"
    ref.write_text("DOG THE SEES A CAT\nCAT BIG RED ON THE HOUSE\n")
    result = run_tx("evaluate", "--hyp", str(ref), "--ref", str(ref), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["bleu"] == 100.0 and json.loads(result.stdout)["chrf"] == 100.0
    src = tmp_path / "src"
    src.write_text("cat a sees the dog\nhouse the on red big cat\n")
    result = run_tx("evaluate", str(tiny_run), "--src", str(src), "--ref", str(ref), "--json",
                    "--output", str(tmp_path / "hyp"), "--max-len-a", "0", "--threads", "1")
    assert result.returncode == 0, result.stderr
    scores = json.loads(result.stdout)
    assert scores["sentences"] == 2 and 0 <= scores["bleu"] <= 100 and scores["decoding"]["beam"] == 2
    assert len((tmp_path / "hyp").read_text().splitlines()) == 2
    result = run_tx("evaluate", str(tiny_run), "--src", str(src))
    assert result.returncode == 2 and "--ref is required" in result.stderr


# --------------------------------------------------------------------------- invalid UTF-8


BAD = b"the dog\n\xff\xfe cat\n\nbig \xc3 house\nred\n"  # lines 2 and 4 are not valid UTF-8


@pytest.mark.parametrize("command", ["translate", "attention-dump"])
def test_input_errors_replace_keeps_every_line_and_counts_the_bad_ones(tiny_run: Path, tmp_path: Path, command):
    src = tmp_path / "bad.src"
    src.write_bytes(BAD)
    args = ["--input", str(src), "--input-errors", "replace", "--threads", "1"] if command == "translate" else \
        ["--input", str(src), "--input-errors", "replace"]
    result = run_tx(command, str(tiny_run), *args, "--beam", "1", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.split("\n")) == 6  # 5 lines in, 5 out (+ the last newline)
    warning = [line for line in result.stderr.splitlines() if "UTF-8" in line]
    assert len(warning) == 1 and f"2 lines of {src}" in warning[0], result.stderr
    if command == "translate":
        assert result.stdout.split("\n")[2] == ""  # the empty line stays empty


def test_input_errors_strict_names_the_line_and_keeps_what_came_before(tiny_run: Path, tmp_path: Path):
    src = tmp_path / "bad.src"
    src.write_bytes(BAD)
    result = run_tx("translate", str(tiny_run), "--input", str(src), "--beam", "1", "--threads", "1")
    assert result.returncode == 1 and f"{src}: line 2: not valid UTF-8" in result.stderr
    assert len(result.stdout.split("\n")) == 2  # line 1 went out
    bad_mode = run_tx("translate", str(tiny_run), "--input", str(src), "--input-errors", "ignore")
    assert bad_mode.returncode == 2 and "--input-errors 'ignore'" in bad_mode.stderr


def test_score_and_evaluate_replace_invalid_utf8(tiny_run: Path, tmp_path: Path):
    src, tgt = tmp_path / "bad.src", tmp_path / "bad.tgt"
    src.write_bytes(BAD)
    tgt.write_bytes(b"A\nB\nC\nD \xff\nE\n")
    strict = run_tx("score", str(tiny_run), "--src", str(src), "--tgt", str(tgt))
    assert strict.returncode == 2 and f"{src}: line 2: not valid UTF-8" in strict.stderr
    scored = run_tx("score", str(tiny_run), "--src", str(src), "--tgt", str(tgt), "--input-errors", "replace")
    assert scored.returncode == 0 and len(scored.stdout.splitlines()) == 5, scored.stderr
    assert f"2 lines of {src}, 1 line of {tgt}" in scored.stderr
    evaluated = run_tx("evaluate", str(tiny_run), "--src", str(src), "--ref", str(tgt), "--beam", "1",
                       "--input-errors", "replace", "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    result = json.loads(evaluated.stdout)
    assert result["sentences"] == 5 and result["replaced_lines"] == {str(src): 2, str(tgt): 1}
