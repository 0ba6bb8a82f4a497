"""The manifest of a `tx prepare` cache (txcli/prepared.py): what the cache is built from (the
recipe's facts, files with size, time and SHA-256), its shape checked before anything in it
is trusted (a damaged or hand-edited manifest must not name files outside the cache or arrays of
an impossible size), and the comparison of what a cache was built from with what a recipe asks
for now, which names the first thing that differs."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Callable, Optional

from .errors import UsageError

FORMAT = 1
NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
SIDE_ARRAYS = {"ids": None, "offsets": "<i8", "text": "|u1", "text_offsets": "<i8"}  # None: the id dtype
ID_DTYPES = ("<u2", "<i4")
HASH_BLOCK = 1 << 22  # bytes per read when hashing a source file


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def file_fact(path: Path, hashed: bool) -> dict:
    """Path, size and modification time of a file (and its SHA-256 when `hashed`). Taken before
    the file is read, so a change while tx prepare reads it shows as a changed time later."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError as err:
        raise UsageError(f"{path}: cannot read ({err.strerror})") from None
    fact = {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    if hashed:
        fact["sha256"] = file_sha256(path)
    return fact


def recipe_facts(data, tokenizer_paths: tuple[Path, Path], vocab: tuple[int, int]) -> dict:
    """What decides a cache's content, from a recipe's `data` section (read by attribute, so this
    core module needs no schema) and the run's tokenizer files and vocabulary sizes. A corpus's
    weight is not here: it decides how often pairs are drawn, not what the cache holds."""
    corpora = []
    for c in data.corpora():
        own = sorted(c.filters.model_fields_set) if c.filters is not None else []
        files = {"path": c.path} if c.path is not None else {"src": c.src, "tgt": c.tgt}
        corpora.append({"name": c.name, "format": c.format, "files": files, "tag": c.tag,
                        "filters": data.filters_of(c).model_dump(mode="json"), "own_filters": own})
    return {"corpora": corpora, "max_len": data.max_len, "text": data.sampling is not None,
            "tokenizers": {"src": tokenizer_paths[0], "tgt": tokenizer_paths[1]},
            "vocab": {"src": vocab[0], "tgt": vocab[1]}}


def manifest_for(facts: dict, hash_sources: bool = True) -> dict:
    """The `built_from` part of a manifest: `facts` with every file's size, time and SHA-256
    (tokenizer files always hashed: they are small; source files only when hash_sources, which
    tx prepare sets and a reader leaves off, letting open_prepared hash only a touched file)."""
    corpora = [{**c, "files": {k: file_fact(p, hash_sources) for k, p in c["files"].items()}}
               for c in facts["corpora"]]
    tokenizers = {side: file_fact(p, True) for side, p in facts["tokenizers"].items()}
    return {"corpora": corpora, "max_len": facts["max_len"], "text": bool(facts["text"]),
            "tokenizers": tokenizers, "vocab": dict(facts["vocab"])}


class _Bad(ValueError):
    pass


def _need(ok: bool, what: str) -> None:
    if not ok:
        raise _Bad(what)


def _count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_corpus(entry, text: bool, id_dtype: Optional[str]) -> str:
    _need(isinstance(entry, dict), "a corpus entry is not an object")
    name = entry.get("name")
    _need(isinstance(name, str) and bool(NAME.match(name)), f"corpus name {name!r}")
    _need(_count(entry.get("pairs")), f"{name}: pairs")
    counts = entry.get("counts")
    _need(isinstance(counts, dict) and _count(counts.get("read")) and _count(counts.get("kept"))
          and isinstance(counts.get("dropped"), dict) and all(_count(v) for v in counts["dropped"].values()),
          f"{name}: counts")
    arrays = entry.get("arrays")
    _need(isinstance(arrays, dict), f"{name}: arrays")
    wanted = [f"{side}_{kind}" for side in ("src", "tgt") for kind in SIDE_ARRAYS if text or "text" not in kind]
    _need(sorted(arrays) == sorted(wanted), f"{name}: arrays {sorted(arrays)}")
    for key, spec in arrays.items():
        _need(isinstance(spec, dict) and spec.get("file") == f"{name}.{key}", f"{name}: {key} file")
        _need(_count(spec.get("count")), f"{name}: {key} count")
        dtype = SIDE_ARRAYS[key.split("_", 1)[1]]
        _need(spec.get("dtype") == (dtype or id_dtype) and spec["dtype"] in (*ID_DTYPES, "<i8", "|u1"),
              f"{name}: {key} dtype {spec.get('dtype')!r}")
    return name


def check_manifest(manifest) -> Optional[str]:
    """None when the manifest has the shape this tx writes, else what is wrong with it."""
    try:
        _need(isinstance(manifest, dict), "not an object")
        _need(manifest.get("format") == FORMAT, f"cache format {manifest.get('format')!r}, this tx reads {FORMAT}")
        built = manifest.get("built_from")
        _need(isinstance(built, dict), "built_from")
        vocab = built.get("vocab")
        _need(isinstance(vocab, dict) and all(_count(vocab.get(s)) and vocab[s] > 0 for s in ("src", "tgt")), "vocab")
        _need(isinstance(built.get("text"), bool), "text")
        for key in ("corpora", "tokenizers", "max_len"):
            _need(key in built, key)
        entries = manifest.get("corpora")
        _need(isinstance(entries, list) and len(entries) > 0, "corpora")
        id_dtype = entries[0].get("arrays", {}).get("src_ids", {}).get("dtype") if isinstance(entries[0], dict) else None
        _need(id_dtype in ID_DTYPES, f"id dtype {id_dtype!r}")
        names = [_check_corpus(e, built["text"], id_dtype) for e in entries]
        _need(len(set(names)) == len(names), "a corpus name twice")
    except _Bad as bad:
        return str(bad)
    return None


def _file_changed(key: str, built: dict, now: dict, sha256: Callable) -> Optional[str]:
    if built.get("path") != now["path"]:
        return f"{key} changed since tx prepare (was {built.get('path')}, now {now['path']})"
    if built.get("size") != now["size"]:
        return f"{key} ({now['path']}) changed since tx prepare"
    if built.get("mtime_ns") != now["mtime_ns"]:  # touched: the content decides
        digest = now.get("sha256") or sha256(now["path"])
        if digest != built.get("sha256"):
            return f"{key} ({now['path']}) changed since tx prepare"
    return None


def _corpus_changed(key: str, built: dict, now: dict, sha256: Callable) -> Optional[str]:
    if built.get("format") != now["format"] or sorted(built.get("files", {})) != sorted(now["files"]):
        return f"{key}: the corpus layout changed since tx prepare ({built.get('format')} -> {now['format']})"
    for side, fact in now["files"].items():
        reason = _file_changed(f"{key}.{side}", built["files"][side], fact, sha256)
        if reason:
            return reason
    if built.get("tag") != now["tag"]:
        return f"{key}.tag changed since tx prepare ({built.get('tag')!r} -> {now['tag']!r})"
    old, new = built.get("filters", {}), now["filters"]
    for name in sorted(set(old) | set(new)):
        if old.get(name) != new.get(name):
            owner = f"{key}.filters" if name in now["own_filters"] or name in built.get("own_filters", []) else "data.filters"
            return f"{owner}.{name} changed since tx prepare ({old.get(name)} -> {new.get(name)})"
    return None


def stale_reason(built: dict, expected: dict, sha256: Callable[[str], str]) -> Optional[str]:
    """What differs between what a cache was built from (`built`) and what the recipe asks for
    now (`expected`, from prepared.manifest_for), first difference first; None when current.
    `sha256(path)` hashes a source file whose time changed but whose size did not."""
    now_corpora = expected["corpora"]
    built_corpora = {c.get("name"): c for c in built["corpora"] if isinstance(c, dict)}
    for name in built_corpora:
        if name not in {c["name"] for c in now_corpora}:
            return f"data.train changed since tx prepare (corpus {name!r} is gone)"
    for i, now in enumerate(now_corpora):
        key = "data.train" if len(now_corpora) == 1 else f"data.train.{i}"
        if now["name"] not in built_corpora:
            return f"{key} changed since tx prepare (corpus {now['name']!r} is new)"
        reason = _corpus_changed(key, built_corpora[now["name"]], now, sha256)
        if reason:
            return reason
    for side, fact in expected["tokenizers"].items():
        was = built["tokenizers"].get(side, {})
        if was.get("sha256") != fact["sha256"]:  # the content decides: runs sharing data.prepared copy it
            return f"the tokenizer ({fact['path']}) changed since tx prepare"
    if built["max_len"] != expected["max_len"]:
        return f"data.max_len changed since tx prepare ({built['max_len']} -> {expected['max_len']})"
    if built["vocab"] != expected["vocab"]:
        return "the tokenizer's vocabulary changed since tx prepare"
    if expected["text"] and not built["text"]:
        return "data.sampling is set, and the cache was built without it (it keeps no text to re-sample)"
    return None
