"""A real English -> German corpus from the translation catalogs this machine's Debian packages
ship (/usr/share/locale/de/LC_MESSAGES/*.mo): every single-line message with a translation,
deduplicated, split by a hash of the English side into train / valid / test (1,000 pairs each for
valid and test). The same packages give the same corpus; more packages give more pairs.

    python bench/gettext_corpus.py OUT_DIR [--lang de] [--repeat N]

--repeat N writes the training split N times over (a corpus larger than one pool, for the
data-pipeline benchmarks). --lang de,fr,es,... writes English -> each of them, one language
after another, into train.many etc.: a larger corpus without a repeated pair (each kept once), whose target side
keeps meeting new words (bench/prepare_bench.py).
"""

from __future__ import annotations

import argparse
import gettext
import hashlib
from pathlib import Path


def catalog_pairs(lang: str) -> list[tuple[str, str]]:
    pairs = set()
    for mo in sorted(Path("/usr/share/locale", lang, "LC_MESSAGES").glob("*.mo")):
        try:
            with open(mo, "rb") as f:
                catalog = gettext.GNUTranslations(f)._catalog
        except (OSError, UnicodeDecodeError, gettext.error if hasattr(gettext, "error") else OSError):
            continue
        for src, tgt in catalog.items():
            if not (isinstance(src, str) and isinstance(tgt, str)):
                continue  # plural forms are keyed by (msgid, n)
            src, tgt = " ".join(src.split()), " ".join(tgt.split())
            if src and tgt and "\n" not in src and "\n" not in tgt:
                pairs.add((src, tgt))
    return sorted(pairs)


def bucket(text: str) -> int:
    return int.from_bytes(hashlib.sha1(text.encode("utf-8")).digest()[:4], "big")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--lang", default="de")
    ap.add_argument("--held-out", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    langs = args.lang.split(",")
    splits: dict[str, list[tuple[str, str]]] = {"test": [], "valid": [], "train": []}
    for lang in langs:
        pairs = sorted(catalog_pairs(lang), key=lambda p: (bucket(p[0]), p))
        held = args.held_out
        for name, part in (("test", pairs[:held]), ("valid", pairs[held:2 * held]), ("train", pairs[2 * held:])):
            splits[name] += part
    splits = {name: list(dict.fromkeys(part)) for name, part in splits.items()}  # two languages may share a pair
    suffix = langs[0] if len(langs) == 1 else "many"
    args.out.mkdir(parents=True, exist_ok=True)
    for name, part in splits.items():
        times = args.repeat if name == "train" else 1
        with open(args.out / f"{name}.en", "w", encoding="utf-8") as fs, \
                open(args.out / f"{name}.{suffix}", "w", encoding="utf-8") as ft:
            for _ in range(times):
                for src, tgt in part:
                    fs.write(src + "\n")
                    ft.write(tgt + "\n")
        print(f"{name}: {len(part) * times} pairs")


if __name__ == "__main__":
    main()
