"""The embedded default corpus: docstrings of the installed Python standard library and Keras.

Why: the README's first command must pretrain something real with no download and no data of
the user's own. Every install of t5pre carries a few MB of carefully written English prose --
the docstrings of the Python standard library and of Keras -- so that is the default corpus.

* One document per docstring (module, class, function or method), cleaned with
  ``inspect.cleandoc``; its id is the qualified name (``json.decoder.JSONDecoder.decode``).
* ``summary`` is the docstring's first paragraph on one line (PEP 257's summary), ``body`` the
  rest (empty for one-paragraph docstrings): an embedded "body -> summary" summarization task.
* Order is deterministic (sorted files, source order inside a file); exact duplicate texts and
  docstrings under 5 words are dropped; tests, ``idlelib``, ``lib2to3``, ``encodings`` and the
  like are skipped.
* Split: ~2% ``validation`` by a hash of the name, the rest ``train``; stable across runs.
* Extraction (~5 s with ``ast``) runs once; the records are cached as JSONL under
  ``$T5PRE_CACHE_DIR`` (default ``~/.cache/t5pre``), keyed by the Python and Keras versions and
  written atomically. The corpus therefore depends on those versions (a few % change between
  Python minor releases).
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import inspect
import json
import os
import random
import sys
import sysconfig
from typing import NamedTuple

from t5pre.errors import DataError
from t5pre.files import atomic_file

EXTRACTOR_VERSION = 1
VALIDATION_PER_MILLE = 20  # 2% of the documents
MIN_WORDS = 5
DEFAULT_PACKAGES = ("stdlib", "keras")
SPLITS = ("train", "validation")
FIELDS = ("name", "kind", "text", "summary", "body", "signature")

_SKIP_DIRS = {
    "test", "tests", "testing", "idlelib", "lib2to3", "turtledemo", "ensurepip", "encodings",
    "site-packages", "dist-packages", "__pycache__", "pydoc_data", "_api", "api", "include",
}
_records_memo: dict = {}


def cache_dir() -> str:
    """``$T5PRE_CACHE_DIR`` or ``~/.cache/t5pre``."""
    return os.environ.get("T5PRE_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "t5pre")


def split_of(name: str) -> str:
    """``"validation"`` for ~2% of names (by a stable hash), else ``"train"``."""
    bucket = int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little") % 1000
    return "validation" if bucket < VALIDATION_PER_MILLE else "train"


def _package_roots(packages):
    """``[(label, root dir, module prefix)]`` for the requested packages that are installed."""
    roots = []
    for package in packages:
        if package == "stdlib":
            roots.append(("stdlib", sysconfig.get_paths()["stdlib"], ""))
            continue
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.origin:
            continue
        root = os.path.dirname(spec.origin)
        src = os.path.join(root, "src")  # keras 3 keeps its code in keras/src; keras/api re-exports
        if os.path.isdir(src):
            roots.append((package, src, f"{package}.src"))
        else:
            roots.append((package, root, package))
    return roots


def _version_tag(packages) -> str:
    parts = [f"py{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}"]
    for package in packages:
        if package == "stdlib":
            continue
        try:
            from importlib.metadata import version

            parts.append(f"{package}{version(package)}")
        except Exception:  # noqa: BLE001 - not installed: nothing extracted from it either
            parts.append(f"{package}-none")
    return "-".join(parts)


def _python_files(root):
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(
            d for d in dirnames if d not in _SKIP_DIRS and not d.startswith(("config-", "."))
        )
        for filename in sorted(filenames):
            if filename.endswith(".py") and not filename.startswith("test_") and not filename.endswith("_test.py"):
                yield os.path.join(dirpath, filename)


def _module_name(root, path, prefix):
    rel = os.path.relpath(path, root)[: -len(".py")].split(os.sep)
    if rel[-1] == "__init__":
        rel = rel[:-1]
    parts = ([prefix] if prefix else []) + rel
    return ".".join(p for p in parts if p)


def split_docstring(text: str) -> tuple[str, str]:
    """``(summary, body)``: the first paragraph joined on one line, and the rest."""
    paragraphs = text.strip().split("\n\n", 1)
    summary = " ".join(line.strip() for line in paragraphs[0].splitlines() if line.strip())
    body = paragraphs[1].strip() if len(paragraphs) > 1 else ""
    return summary, body


def _docstrings(tree, module):
    """``(name, kind, node)`` for the module and every class/function with a docstring."""
    yield module, "module", tree
    stack = [(tree, module)]
    while stack:
        node, prefix = stack.pop(0)
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                name = f"{prefix}.{child.name}"
                yield name, "class", child
                stack.append((child, name))
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{prefix}.{child.name}"
                yield name, "function", child
                stack.append((child, name))


def _signature(kind, node):
    if kind != "function":
        return ""
    try:
        return f"{node.name}({ast.unparse(node.args)})"
    except Exception:  # noqa: BLE001 - cosmetic field
        return ""


def extract_records(packages=DEFAULT_PACKAGES) -> list[dict]:
    """Walk the installed sources and return the corpus records (no caching)."""
    records, seen = [], set()
    for _label, root, prefix in _package_roots(packages):
        for path in _python_files(root):
            try:
                with open(path, "rb") as f:
                    tree = ast.parse(f.read(), filename=path)
            except (SyntaxError, ValueError, OSError):
                continue  # a file of another Python version or unreadable: not prose we need
            module = _module_name(root, path, prefix)
            for name, kind, node in _docstrings(tree, module):
                raw = ast.get_docstring(node, clean=False)
                if not raw:
                    continue
                text = inspect.cleandoc(raw).strip()
                if len(text.split()) < MIN_WORDS or text in seen:
                    continue
                seen.add(text)
                summary, body = split_docstring(text)
                records.append(
                    {
                        "name": name,
                        "kind": kind,
                        "text": text,
                        "summary": summary,
                        "body": body,
                        "signature": _signature(kind, node),
                        "split": split_of(name),
                    }
                )
    if not records:
        raise DataError("the default corpus is empty: no Python sources with docstrings were found")
    return records


def corpus_cache_path(packages=DEFAULT_PACKAGES, directory=None) -> str:
    tag = _version_tag(packages)
    label = "+".join(packages)
    return os.path.join(directory or cache_dir(), f"default_corpus-v{EXTRACTOR_VERSION}-{label}-{tag}.jsonl")


def _write_jsonl_atomic(path, records):
    with atomic_file(path, "w") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")


def _read_jsonl(path):
    records = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            records.append(json.loads(line))
    if not records or any(k not in records[0] for k in FIELDS):
        raise ValueError("stale or empty cache")
    return records


def default_corpus_records(split: str | None = None, packages=DEFAULT_PACKAGES, use_cache: bool = True) -> list[dict]:
    """The corpus records (dicts with ``name kind text summary body signature split``).

    ``split`` is ``"train"``, ``"validation"`` or ``None`` (all). The first call extracts and
    caches; later calls (and processes) read the cache.
    """
    if split is not None and split not in SPLITS:
        raise DataError(f"default corpus: no split {split!r}; it has {list(SPLITS)}")
    packages = tuple(packages)
    path = corpus_cache_path(packages)
    key = (path, use_cache)
    records = _records_memo.get(key)
    if records is None:
        records = None
        if use_cache and os.path.exists(path):
            try:
                records = _read_jsonl(path)
            except (OSError, ValueError):
                records = None  # unreadable or stale cache: rebuild it
        if records is None:
            records = extract_records(packages)
            if use_cache:
                try:
                    _write_jsonl_atomic(path, records)
                except OSError:
                    pass  # a read-only home: the corpus still works, just re-extracted next time
        _records_memo[key] = records
    if split is None:
        return list(records)
    return [r for r in records if r["split"] == split]


class CorpusRecord(NamedTuple):
    """One document of the default corpus (attribute access for :func:`records`)."""

    name: str
    kind: str
    text: str
    summary: str
    body: str
    signature: str
    split: str


def records(split: str | None = None, packages=DEFAULT_PACKAGES) -> list[CorpusRecord]:
    """:func:`default_corpus_records` as :class:`CorpusRecord` tuples (``record.summary`` ...)."""
    return [CorpusRecord(**{f: r[f] for f in CorpusRecord._fields}) for r in default_corpus_records(split, packages)]


def default_corpus_texts(split: str = "train", packages=DEFAULT_PACKAGES):
    """Just the ``text`` of each document of ``split`` (what vocabulary training reads)."""
    return [r["text"] for r in default_corpus_records(split, packages)]


def default_corpus_dataset(split: str = "train", shuffle: bool = True, seed: int = 0, packages=DEFAULT_PACKAGES, fields=FIELDS):
    """``tf.data.Dataset`` of dicts of ``tf.string`` (``fields``) for ``split``; ``shuffle``
    permutes the documents with ``seed`` (the order is otherwise the corpus order)."""
    import tensorflow as tf

    records = default_corpus_records(split, packages)
    if shuffle:
        records = list(records)
        random.Random(seed).shuffle(records)
    columns = {field: [r[field] for r in records] for field in fields}
    return tf.data.Dataset.from_tensor_slices(columns)


def default_corpus_source(packages=DEFAULT_PACKAGES, fields=FIELDS):
    """The default corpus as a :class:`~t5pre.data.sources.FunctionSource` (splits ``train``,
    ``validation``; fields ``name kind text summary body signature``). Cheap to create: nothing
    is extracted until a dataset is built."""
    from t5pre.data.sources import FunctionSource

    packages, fields = tuple(packages), tuple(fields)

    def read(split, shuffle, seed):
        return default_corpus_dataset(split, shuffle=shuffle, seed=seed, packages=packages, fields=fields)

    def fingerprint(split):  # the extractor's cache key: versions of Python, Keras, extractor
        return f"{os.path.basename(corpus_cache_path(packages))}:{','.join(fields)}:{split}"

    return FunctionSource(read, splits=SPLITS, name=f"default_corpus({'+'.join(packages)})",
                          fingerprint=fingerprint)
