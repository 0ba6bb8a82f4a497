"""The explorer page (`tx attention-dump --html`) in a real browser: headless Chromium from the
system (`apt-get install chromium`) driven by Playwright; no browser is downloaded. One browser and
one page for the whole module. Run only these: `pytest -m browser`. They skip without Chromium."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from txcli.attention import alignment_error_rate

from .conftest import TINY_RECIPE, make_corpus, make_tiny_run
from .test_attention import SOURCES, TARGETS, png_size, tx
from .test_explorer import page_data

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def page_file(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("explorer")
    make_corpus(folder)
    recipe = folder / "recipe.yaml"
    recipe.write_text(TINY_RECIPE.format(kind="bpe", joint="true"), encoding="utf-8")
    run = make_tiny_run(recipe)
    (folder / "s").write_text("\n".join(SOURCES) + "\n", encoding="utf-8")
    (folder / "t").write_text("\n".join(TARGETS) + "\n", encoding="utf-8")
    (folder / "gold").write_text("0-0 1-1\n0-0\n1-1 0-2\n", encoding="utf-8")
    result = tx("attention-dump", str(run), "--input", str(folder / "s"), "--ref", str(folder / "t"), "--align",
                "--gold", str(folder / "gold"), "--output", str(folder / "a"), "--html", str(folder / "page.html"),
                "--device", "cpu")
    assert result.exit_code == 0, result.output
    return folder / "page.html"


@pytest.fixture(scope="module")
def browser_page(request):
    if CHROMIUM is None:
        pytest.skip("chromium not installed: apt-get install chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright not installed: pip install -e '.[test]'")
    page_file = request.getfixturevalue("page_file")  # built only once a browser is known to be there
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        requests: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        page.goto(page_file.as_uri())
        page.wait_for_selector("body[data-ready='1']", timeout=10_000)
        yield page, errors, requests
        browser.close()


@pytest.fixture(scope="module")
def data(browser_page, page_file: Path):
    return page_data(page_file.read_text(encoding="utf-8"))


def cells(page) -> list[dict]:
    return page.eval_on_selector_all("#heatmap .cell", "cs => cs.map(c => ({q: +c.dataset.q, k: +c.dataset.k, "
                                     "w: c.dataset.w, masked: c.dataset.masked === '1'}))")


def expected(data, n: int, kind: str, layer: str, head) -> np.ndarray:
    meta, sentences = data
    s = sentences[n]
    q = len(s["s"]) if kind == "enc" else len(s["t"])
    k = len(s["t"]) if kind == "dec" else len(s["s"])
    w = np.asarray(s["w"][kind][layer], dtype=np.float64).reshape(len(s["heads"]), q, k) / 10 ** meta["precision"]
    return w.mean(0) if head == "mean" else w[head]


def choose(page, sentence=None, kind=None, layer=None, head=None) -> None:
    for sel, value in (("#sentence", sentence), ("#kind", kind), ("#layer", layer), ("#head", head)):
        if value is not None:
            page.select_option(sel, str(value))


def assert_cells_are(page, want: np.ndarray) -> None:
    got = cells(page)
    assert len(got) == want.size
    grid = np.zeros_like(want)
    for c in got:
        grid[c["q"], c["k"]] = float(c["w"])
    np.testing.assert_allclose(grid, want, atol=0.6e-4)


def test_page_loads_without_errors_or_requests(browser_page, data):
    page, errors, requests = browser_page
    assert errors == []
    assert all(url.startswith("file:") for url in requests), requests
    assert page.eval_on_selector_all("#sentence option", "os => os.length") == len(data[1])
    assert page.get_attribute("body", "data-parsed") == "0"  # only the sentence on screen was parsed


def test_choosing_kind_layer_head_draws_the_embedded_weights(browser_page, data):
    page, errors, _ = browser_page
    for n, kind, layer, head in ((0, "cross", "1", "mean"), (2, "enc", "0", 3), (2, "dec", "1", 1), (1, "cross", "0", 0)):
        choose(page, n, kind, layer, head)
        assert_cells_are(page, expected(data, n, kind, layer, head))
    assert set(page.get_attribute("body", "data-parsed").split(",")) == {"0", "1", "2"}
    assert errors == []


def test_decoder_future_is_masked_and_empty(browser_page, data):
    page, _, _ = browser_page
    choose(page, 1, "dec", "0", "mean")
    got = cells(page)
    assert any(c["masked"] for c in got)
    assert all(c["masked"] == (c["k"] > c["q"]) for c in got)
    styles = page.eval_on_selector_all("#heatmap .cell[data-masked='1']", "cs => cs.map(c => c.style.background)")
    assert set(styles) == {""}  # no weight colour: the hatching shows through


def test_hover_shows_the_weight_and_highlights_row_and_column(browser_page, data):
    page, _, _ = browser_page
    choose(page, 0, "cross", "1", 2)
    want = expected(data, 0, "cross", "1", 2)
    page.hover("#heatmap .cell[data-q='2'][data-k='1']")
    readout = page.get_attribute("#readout", "data-w")
    assert abs(float(readout) - want[2, 1]) < 0.6e-4
    assert readout in page.inner_text("#readout")
    lit = page.eval_on_selector_all("#heatmap .cell.hl", "cs => cs.map(c => [+c.dataset.q, +c.dataset.k])")
    assert all(q == 2 or k == 1 for q, k in lit) and len(lit) == want.shape[0] + want.shape[1] - 1


def test_thumbnail_click_opens_that_head(browser_page, data):
    page, _, _ = browser_page
    choose(page, 2, "enc", "1", "mean")
    assert page.eval_on_selector_all("#thumbs canvas", "cs => cs.map(c => c.dataset.head)") == ["0", "1", "2", "3", "mean"]
    page.click("#thumbs canvas[data-head='2']")
    assert page.input_value("#head") == "2"
    assert_cells_are(page, expected(data, 2, "enc", "1", 2))


def test_lines_view_and_alignments(browser_page, data):
    page, _, _ = browser_page
    meta, sentences = data
    choose(page, 0, "cross", "1", "mean")
    want = expected(data, 0, "cross", "1", "mean")
    lines = page.eval_on_selector_all("#lines line", "ls => ls.map(l => [+l.dataset.q, +l.dataset.k, +l.dataset.w])")
    assert len(lines) == int((np.round(want, 4) >= 0.005).sum())
    for q, k, w in lines:
        assert abs(w - want[q, k]) < 0.6e-4
    # predicted links framed on the rows that predict the target word; gold "0-0 1-1" dotted
    s = sentences[0]
    framed = set(map(tuple, page.eval_on_selector_all("#heatmap .cell.al", "cs => cs.map(c => [+c.dataset.q, +c.dataset.k])")))
    rows_of = lambda j: [t - 1 for t, w in enumerate(s["tw"]) if w == j]  # noqa: E731
    cols_of = lambda i: [k for k, w in enumerate(s["sw"]) if w == i]  # noqa: E731
    assert framed == {(r, k) for i, j in meta["align"][str(s["i"])] for r in rows_of(j) for k in cols_of(i)}
    gold = set(map(tuple, page.eval_on_selector_all("#heatmap .cell.gold-s", "cs => cs.map(c => [+c.dataset.q, +c.dataset.k])")))
    assert gold == {(r, k) for i, j in ((0, 0), (1, 1)) for r in rows_of(j) for k in cols_of(i)}
    assert "AER" in page.inner_text("#aer")
    links = {tuple(p) for p in meta["align"][str(s["i"])]}
    want_aer = alignment_error_rate([links], [{(0, 0), (1, 1)}], [set()])
    assert abs(float(page.get_attribute("#sentence-aer", "data-aer")) - want_aer) < 1e-4


def test_hovering_a_token_in_the_lines_view_keeps_only_its_links(browser_page, data):
    page, _, _ = browser_page
    choose(page, 1, "cross", "0", 1)
    page.hover("#lines text.k[data-k='1']")
    shown = page.eval_on_selector_all("#lines line", "ls => ls.filter(l => l.style.display !== 'none').map(l => l.dataset.k)")
    assert shown and set(shown) == {"1"}


def test_screenshot(browser_page, tmp_path: Path):
    page, errors, _ = browser_page
    choose(page, 0, "cross", "1", "mean")
    page.screenshot(path=str(tmp_path / "explorer.png"), full_page=True)
    w, h = png_size(tmp_path / "explorer.png")
    assert w >= 800 and h >= 400
    assert errors == []
