"""--engine ctranslate2 on imported Marian runs: the export learns SiLU (CTranslate2's SWISH) and
the output bias with tied embeddings, and decodes as the torch engine does."""

import pytest

from txcli.commands.import_marian import import_marian

from .marian_models import make_marian_dir

pytest.importorskip("ctranslate2")
pytestmark = pytest.mark.filterwarnings("ignore:Recommended. pip install sacremoses")

SOURCES = ["The dog sees the big cat.", "a small red house", "Green trees sleep with 2024 dogs!", "in", "", "x"]


def tx(*args):
    from typer.testing import CliRunner

    from txcli.cli import app

    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.mark.parametrize("shape", [dict(), dict(shared=False, tied=False, heads=3, d_model=18, activation="swish")])
def test_ctranslate2_decodes_as_torch_on_an_imported_run(tmp_path, shape):
    hf_dir = make_marian_dir(tmp_path / "hf", seed=11, **shape)
    import_marian(hf_dir, tmp_path / "run")
    (tmp_path / "src.txt").write_text("\n".join(SOURCES) + "\n", encoding="utf-8")
    common = [str(tmp_path / "run"), "-i", str(tmp_path / "src.txt"), "--max-len-a", "0", "--max-len-b", "12",
              "--alpha", "0", "--device", "cpu", "--tokens"]
    for beam in ("1", "4"):
        torch_out = tx("translate", *common, "--beam", beam)
        ct2_out = tx("translate", *common, "--beam", beam, "--engine", "ctranslate2")
        assert ct2_out == torch_out and len(torch_out.splitlines()) == len(SOURCES)
    # a minimum length past the limit: the limit wins in both engines (CTranslate2 alone would refuse it)
    at_limit = tx("translate", *common, "--beam", "2", "--min-len", "50", "--engine", "ctranslate2")
    assert at_limit == tx("translate", *common, "--beam", "2", "--min-len", "50")
    assert [len(line.split()) for line in at_limit.splitlines() if line] == [12] * 5
    info = (tmp_path / "run" / "ctranslate2" / "tx_export.json").read_text()
    assert '"activation": "silu"' in info
