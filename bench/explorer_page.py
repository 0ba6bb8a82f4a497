"""Size of the explorer page (`tx attention-dump --html`) and the time headless Chromium takes to
open it, for 10 and 100 sentences of the demo test split (forced decoding, --align --gold).

    .venv/bin/python bench/explorer_page.py [RUN_DIR] [--sizes 10 100] [--precision 4]
                                            [--screenshot docs/explorer.png]

Open = navigation start to the page's script having drawn the first sentence (body[data-ready]);
pick = choosing the last sentence (parse its block, draw heatmap, thumbnails and lines), median of 5.
Needs /usr/bin/chromium and the playwright package (it downloads no browser).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from txcli.commands.attention import DumpRequest, dump_attention  # noqa: E402

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


def build(run_dir: Path, n: int, precision: int, folder: Path) -> tuple[Path, float]:
    files = {}
    for name in ("src", "tgt", "align"):
        lines = (ROOT / f"data/demo/test.{name}").read_text(encoding="utf-8").splitlines()[:n]
        files[name] = folder / f"{n}.{name}"
        files[name].write_text("\n".join(lines) + "\n", encoding="utf-8")
    page = folder / f"explorer-{n}.html"
    req = DumpRequest(run_dir, input=files["src"], ref=files["tgt"], gold=files["align"], align=True,
                      align_method="bidir", output=folder / f"{n}.out", html=page, digits=precision, device="cpu")
    start = time.perf_counter()
    dump_attention(req, sys.stdout.buffer)
    return page, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", nargs="?", default=str(ROOT / "runs/demo"))
    ap.add_argument("--sizes", type=int, nargs="+", default=[10, 100])
    ap.add_argument("--precision", type=int, default=4)
    ap.add_argument("--screenshot", type=Path, default=None, help="PNG of the first page, cross-attention")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    if chromium is None:
        sys.exit("chromium not installed: apt-get install chromium")
    results = []
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=ARGS)
        for n in args.sizes:
            page_file, build_s = build(Path(args.run_dir), n, args.precision, Path(tmp))
            opens, picks = [], []
            for _ in range(5):
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                errors = []
                page.on("pageerror", lambda e: errors.append(str(e)))
                start = time.perf_counter()
                page.goto(page_file.as_uri())
                page.wait_for_selector("body[data-ready='1']")
                opens.append(time.perf_counter() - start)
                start = time.perf_counter()
                page.select_option("#sentence", str(n - 1))
                page.wait_for_function(f"document.body.dataset.parsed.split(',').includes('{n - 1}')")
                picks.append(time.perf_counter() - start)
                assert not errors, errors
                if args.screenshot is not None and n == args.sizes[0] and len(opens) == 1:
                    page.select_option("#sentence", "0")
                    page.select_option("#kind", "cross")
                    page.hover("#heatmap .cell[data-q='3'][data-k='2']")
                    page.screenshot(path=str(args.screenshot))  # the first screen
                page.close()
            size = page_file.stat().st_size
            results.append({"sentences": n, "bytes": size, "bytes_per_sentence": round(size / n),
                            "build_s": round(build_s, 2), "open_s": round(statistics.median(opens), 3),
                            "pick_s": round(statistics.median(picks), 3)})
            r = results[-1]
            print(f"{n:>4} sentences: {size / 1e6:6.2f} MB ({r['bytes_per_sentence']} B each), built in {build_s:.2f} s, "
                  f"opens in {r['open_s']:.3f} s, picking a sentence {r['pick_s']:.3f} s (median of 5)")
        browser.close()
    print(json.dumps({"precision": args.precision, "pages": results}))


if __name__ == "__main__":
    main()
