"""Mixture rates by size: seqio's ``mixing_rate_num_examples`` (mT5's language sampling).

``rate_num_examples(temperature=T, maximum=K)`` is a rate callable for
:meth:`MixtureRegistry.add <t5pre.data.registry.MixtureRegistry.add>`: a task's rate is
``(scale * min(n, K)) ** (1 / T)``, ``n`` its number of examples (documents) in ``split``.
T = 1 samples in proportion to size; larger T flattens towards uniform (mT5: 1/T = 0.3).

``n`` comes from, in order: a token cache's manifest (``caches={task: dir}``, or
:func:`register_cache`), a count recorded earlier in ``$T5PRE_CACHE_DIR/num_examples.json`` (keyed
by the task, split and the source's description and file sizes/mtimes, so a changed source is
counted anew), or a count made once now by reading the split's source, then recorded.
"""

from __future__ import annotations

import json
import os
from typing import Callable, Mapping

from t5pre.errors import ConfigError, DataError

_caches: dict = {}
_known: dict = {}
COUNTS_FILE = "num_examples.json"


def register_cache(task_name: str, cache_dir: str) -> None:
    """Make ``rate_num_examples`` read ``task_name``'s counts from this cache's manifest (for the
    splits it holds; training registers the implicit caches it opens)."""
    dirs = _caches.setdefault(str(task_name), [])
    if str(cache_dir) in dirs:
        dirs.remove(str(cache_dir))
    dirs.insert(0, str(cache_dir))


def register_count(task, split: str, count: int) -> None:
    """Record ``task``'s number of documents in ``split`` for this process (training registers
    what its token caches hold), keyed like the recorded counts: a changed source is not hit."""
    _known[_source_key(task, split)] = int(count)


def _counts_path() -> str:
    from t5pre.data.default_corpus import cache_dir

    return os.path.join(cache_dir(), COUNTS_FILE)


def _source_key(task, split) -> str:
    from t5pre.data.cache import _source_files

    files = _source_files(task, [split]) if hasattr(task.source, "list_files") else {}
    entries = [(e["path"], e["bytes"], e["mtime_ns"]) for e in files.get(split, [])]
    return json.dumps([task.name, split, task.source.describe(), entries])


def _load_counts() -> dict:
    try:
        with open(_counts_path(), encoding="utf-8") as f:
            counts = json.load(f)
        return counts if isinstance(counts, dict) else {}
    except (OSError, ValueError):
        return {}


def _record_count(key: str, count: int) -> None:
    path = _counts_path()
    counts = _load_counts()
    counts[key] = int(count)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    from t5pre.files import atomic_write_json

    atomic_write_json(path, counts, indent=1)


def num_examples(task, split: str = "train", cache_dir: str | None = None) -> int:
    """Examples (documents) of ``task``'s ``split``: from a cache, a recorded count, or counted."""
    from t5pre.data.cache import open_cache

    if cache_dir:
        return open_cache(cache_dir, task=task).num_documents(split)
    for registered in _caches.get(task.name, ()):
        try:
            cache = open_cache(registered, task=task)
        except DataError:
            continue
        if split in cache.manifest["splits"]:
            return cache.num_documents(split)
    key = _source_key(task, split)
    if key in _known:
        return _known[key]
    recorded = _load_counts().get(key)
    if recorded is not None:
        return int(recorded)
    count = sum(1 for _ in task.source.get_dataset(split=split, shuffle=False))
    _record_count(key, count)
    return count


def rate_num_examples(scale: float = 1.0, temperature: float = 1.0, maximum: int | None = None,
                      split: str = "train",
                      caches: Mapping[str, str] | None = None) -> Callable:
    """A mixture rate ``rate(task) = (scale * min(n, maximum)) ** (1 / temperature)``."""
    if temperature <= 0:
        raise ConfigError(f"rate_num_examples: temperature must be > 0, got {temperature}")
    if scale <= 0:
        raise ConfigError(f"rate_num_examples: scale must be > 0, got {scale}")
    caches = dict(caches or {})

    def rate(task) -> float:
        n = num_examples(task, split, caches.get(task.name))
        if n == 0:
            raise DataError(f"task {task.name!r}: split {split!r} has no examples to rate")
        if maximum is not None:
            n = min(n, int(maximum))
        return (scale * n) ** (1.0 / temperature)

    rate.__name__ = f"rate_num_examples(T={temperature}, max={maximum})"
    return rate


__all__ = ["rate_num_examples", "num_examples", "register_cache"]
