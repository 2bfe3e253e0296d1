"""The token caches training builds by itself: a run never needs ``t5pre data cache`` to get an
O(1) resume.

:func:`task_store` is what the training data path asks for a task's split. With an explicit
``cache_dir`` (``data.cache_dir``) it opens that cache. Otherwise it finds or builds, once, the
task's *implicit* cache under :func:`cache_root` (``$T5PRE_CACHE_DIR/token-caches``, default
``~/.cache/t5pre/token-caches``), in a directory named by the task and a key::

    <task name or source>-<split>-<sha256[:16] of the key>/

The key holds the split, the deterministic preprocessors (:func:`describe_step`: name, code
digest, parameters) and the chunking options, the sha256 of every feature's vocabulary, the
sources' fingerprint (:func:`t5pre.data.cache.source_fingerprint`: files with sizes and mtimes,
...) and, for a task that is not a pretraining task, its name and the sequence lengths (its
examples are stored, trimmed to them). A pretraining task stores tokenized documents, which do
not depend on its objective: tasks over the same source and tokenizer (UL2's four denoisers)
share one cache. A changed file, vocabulary, length or preprocessor gives a new cache.

Safety: the cache is built in ``<dir>_temp-*`` and renamed into place when complete
(:func:`t5pre.files.atomic_directory`; a cache is its manifest, written last), under an exclusive ``flock`` on ``<dir>.lock``: a second process
asking for the same cache waits, then reuses it; leftovers of a killed build are deleted by the
next builder (the kernel drops a dead process's lock). Progress lines go to ``log``.

A source t5pre cannot fingerprint (a :class:`~t5pre.data.sources.FunctionSource` without a
``fingerprint``) is tokenized in memory at each start instead (the cost of one pass over the
data, still O(1) in the resume position), with one line saying so; so is a task when the cache
root cannot be written. An infinite source is a :class:`~t5pre.errors.DataError`.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import re
import shutil

from t5pre.errors import ConfigError, DataError

KEY_VERSION = 1
_memory: dict = {}  # in-memory stores of sources without a fingerprint, per process
_warned: set = set()


def cache_root() -> str:
    """``$T5PRE_CACHE_DIR/token-caches`` (default ``~/.cache/t5pre/token-caches``)."""
    from t5pre.data.default_corpus import cache_dir

    return os.path.join(cache_dir(), "token-caches")


_SIMPLE = (str, int, float, bool, type(None), bytes)


def _code_digest(code) -> str:
    """sha256 of a function's byte code and constants (nested functions included)."""
    digest = hashlib.sha256(code.co_code)
    for const in code.co_consts:
        if hasattr(const, "co_code"):
            text = _code_digest(const)
        elif isinstance(const, frozenset):  # set literals: repr order varies per process
            text = repr(sorted(repr(x) for x in const))
        else:
            text = repr(const)
        digest.update(text.encode())
    digest.update(repr(code.co_names).encode())
    return digest.hexdigest()[:16]


def describe_step(step, depth: int = 0):
    """What decides a preprocessor's output, as JSON-able values: its qualified name, its code's
    digest and the simple values it closes over or is bound to (``functools.partial``
    arguments, closure cells, an object's simple attributes); nested callables one level deep.
    A changed preprocessor (code or parameters) so gives a new cache key."""
    if isinstance(step, _SIMPLE):
        return step
    if isinstance(step, (list, tuple)):
        return [describe_step(x, depth) for x in step]
    if isinstance(step, dict):
        return {str(k): describe_step(v, depth) for k, v in sorted(step.items(), key=str)}
    if depth > 2:
        return type(step).__qualname__
    out = {}
    fn = step
    if hasattr(step, "func") and hasattr(step, "args"):  # functools.partial
        out["args"] = describe_step(list(step.args), depth + 1)
        out["keywords"] = describe_step(dict(step.keywords), depth + 1)
        fn = step.func
    out["name"] = f"{getattr(fn, '__module__', '')}." \
                  f"{getattr(fn, '__qualname__', type(fn).__qualname__)}"
    code = getattr(fn, "__code__", None)
    if code is not None:
        out["code"] = _code_digest(code)
        cells = [c.cell_contents for c in (fn.__closure__ or ()) if _has_contents(c)]
        out["closure"] = [describe_step(c, depth + 1) for c in cells
                          if isinstance(c, _SIMPLE + (list, tuple, dict)) or callable(c)]
    elif hasattr(step, "__dict__"):  # a callable object: its simple attributes
        out["attributes"] = {k: describe_step(v, depth + 1) for k, v in sorted(vars(step).items())
                             if isinstance(v, _SIMPLE + (list, tuple, dict))}
    return out


def _describe_source(source) -> dict:
    """A source's type and settings (e.g. a JSON Lines source's fields), not its split patterns
    (the fingerprint covers the split's files) nor its reading parallelism."""
    settings = {k: describe_step(v, 1) for k, v in sorted(vars(source).items())
                if isinstance(v, _SIMPLE + (list, tuple, dict))
                and "pattern" not in k and "parallel" not in k and k not in ("fn", "fingerprint")}
    return {"type": f"{type(source).__module__}.{type(source).__qualname__}", **settings}


def _has_contents(cell) -> bool:
    try:
        cell.cell_contents
    except ValueError:  # an empty cell
        return False
    return True


def cache_key(task, split: str, sequence_length=None) -> dict | None:
    """The fields that name the implicit cache of ``task``'s ``split``, or None when its source
    has no fingerprint."""
    from t5pre.data.cache import FORMAT, VERSION, _cache_layout, pretraining_parts, \
        source_fingerprint, vocabulary_checksum

    fingerprint = source_fingerprint(task, [split])
    if fingerprint is None:
        return None
    kind, features, stop, separator = _cache_layout(task, sequence_length)
    _, chunk_options, _ = pretraining_parts(task)
    return {
        # A pretraining cache holds the tokenized documents, which do not depend on the task's
        # objective: tasks over the same source and tokenizer (UL2's four) share one cache.
        "format": [FORMAT, VERSION, KEY_VERSION], "split": split, "kind": kind,
        "task": task.name if kind == "examples" else None,
        "source": _describe_source(task.source),
        "preprocessors": [describe_step(p) for p in task.preprocessors[:stop]],
        "chunking": ({k: v for k, v in chunk_options.items() if k != "tokens_length"}
                     if chunk_options else None),
        "vocabularies": {k: vocabulary_checksum(f.vocabulary)
                         for k, f in sorted(task.output_features.items())},
        "sequence_length": dict(sequence_length) if kind == "examples" else None,
        "sources": fingerprint,
    }


def cache_path(task, key: dict, root: str | None = None) -> str:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()
    label = re.sub(r"[^A-Za-z0-9_.+-]+", "_", key["task"] or task.source.describe()).strip("_")
    name = f"{label[:60]}-{key['split']}"
    return os.path.join(root or cache_root(), f"{name}-{digest[:16]}")


@contextlib.contextmanager
def _exclusive(lock_path: str, log):
    """An exclusive flock on ``lock_path`` (waits, saying so); a no-op where flock is missing."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: one process per cache, documented
        yield
        return
    with open(lock_path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if log:
                log(f"waiting for another process building the token cache "
                    f"{lock_path[:-len('.lock')]}")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _open(path, task, key):
    """Open an implicit cache: the vocabulary, the shard files, and its recorded key (the key
    holds the sources' fingerprint, recomputed at every use: a changed source names another
    directory)."""
    from t5pre.data.cache import open_cache

    cache = open_cache(path, vocabulary=task.vocabulary)
    if cache.manifest.get("key") != json.loads(json.dumps(key, default=str)):
        raise DataError(f"cache {path}: built for another key; rebuilding it")
    return cache


def ensure_cache(task, split: str, sequence_length=None, *, root: str | None = None, log=print,
                 workers: int = 1, modules=()):
    """The implicit :class:`~t5pre.data.cache.TokenCache` of ``task``'s ``split``, built once;
    None when its source has no fingerprint (see the module doc)."""
    from t5pre.data.cache import MANIFEST, build_cache
    from t5pre.files import atomic_directory

    task.check_split(split)
    key = cache_key(task, split, sequence_length)
    if key is None:
        return None
    path = cache_path(task, key, root)
    if os.path.exists(os.path.join(path, MANIFEST)):
        try:
            return _open(path, task, key)
        except DataError:
            pass  # damaged or changed while built: rebuilt below, under the lock
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        lock = open(path + ".lock", "a+")
        lock.close()
    except OSError as e:
        if log:
            log(f"warning: cannot write the token cache under {os.path.dirname(path)} ({e}); "
                f"task {task.name!r} is tokenized in memory (set T5PRE_CACHE_DIR)")
        return None
    with _exclusive(path + ".lock", log):
        if os.path.exists(os.path.join(path, MANIFEST)):
            try:
                return _open(path, task, key)  # another process built it while we waited
            except DataError as e:
                if log:
                    log(f"rebuilding the token cache {path}: {e}")
        for leftover in (glob.glob(glob.escape(path) + "_temp-*")
                         + glob.glob(glob.escape(path) + "_old-*")):
            shutil.rmtree(leftover, ignore_errors=True)  # a killed build's (we hold the lock)
        if log:
            log(f"building the token cache of task {task.name!r} split {split!r} (once; later "
                f"runs reuse it) in {path}")
        # Built in a staging directory renamed into place (t5pre.files, the one atomic writer).
        with atomic_directory(path, replace=True) as staging:
            manifest = build_cache(task, str(staging), splits=[split],
                                   sequence_length=sequence_length, progress=log, key=key,
                                   workers=workers, modules=modules)
        if log:
            counts = ", ".join(f"{s} {e['documents']:,} documents"
                               for s, e in manifest["splits"].items())
            log(f"token cache of {task.name!r}: {counts} in {manifest['build']['seconds']:.1f} s")
    return _open(path, task, key)


def _check_lengths(cache, sequence_length):
    recorded = cache.manifest.get("sequence_length")
    if recorded and dict(recorded) != dict(sequence_length):
        raise ConfigError(f"cache {cache.path}: built at sequence_length {recorded}, the run uses "
                          f"{dict(sequence_length)}; rebuild it at these lengths")


def task_store(task, split: str, sequence_length, *, cache_dir=None, log=print):
    """The :class:`~t5pre.data.cache.TokenStore` of ``task``'s ``split`` that training reads:
    from ``cache_dir`` (a directory or an opened cache) when it holds the split, else the
    implicit cache, else built in memory (sources without a fingerprint; providers that are no
    :class:`~t5pre.data.registry.Task`, read through their ``get_dataset``)."""
    from t5pre.data.cache import TokenCache, in_memory_store, open_cache, pretraining_parts

    if not hasattr(task, "preprocessors"):
        return _provider_store(task, split, sequence_length)
    stop = pretraining_parts(task)[0]
    lengths = dict(sequence_length) if stop is None else None
    if cache_dir is not None:
        cache = cache_dir if isinstance(cache_dir, TokenCache) else open_cache(str(cache_dir),
                                                                                 task=task)
        _check_lengths(cache, sequence_length)
        if split in cache.manifest["splits"]:
            return cache.split(split)
    cache = ensure_cache(task, split, lengths, log=log)
    if cache is not None:
        from t5pre.data.mixing import register_count

        register_count(task, split, cache.num_documents(split))
        return cache.split(split)
    memo = (task.name, id(task), split, json.dumps(lengths, sort_keys=True))
    if memo not in _memory:
        if log and (task.name, id(task)) not in _warned:
            _warned.add((task.name, id(task)))
            log(f"task {task.name!r}: its source ({task.source.describe()}) has no fingerprint, "
                "so it is tokenized in memory at each start (give the source a fingerprint, or "
                "build a cache with `t5pre data cache` and set data.cache_dir)")
        _memory[memo] = (task, in_memory_store(task, split, lengths))
    return _memory[memo][1]


def _provider_store(provider, split, sequence_length):
    """One pass of a task-contract object's ``get_dataset`` (examples trimmed to the lengths),
    in memory: any :class:`~t5pre.data.registry.DatasetProvider` trains on the same path."""
    import numpy as np

    from t5pre.data.cache import TokenStore

    lengths = {"inputs": int(sequence_length["inputs"]), "targets": int(sequence_length["targets"])}
    memo = (getattr(provider, "name", ""), id(provider), split, json.dumps(lengths, sort_keys=True))
    if memo not in _memory:
        dataset = provider.get_dataset(sequence_length=dict(lengths), split=split, shuffle=False,
                                       seed=0, num_epochs=1)
        rows = {k: [] for k in lengths}
        for example in dataset.as_numpy_iterator():
            for k in lengths:
                rows[k].append(np.asarray(example[k], np.int32)[: lengths[k]])
        shard = {}
        for k in lengths:
            sizes = np.array([len(r) for r in rows[k]], np.int64)
            tokens = np.concatenate(rows[k]) if rows[k] else np.zeros(0, np.int32)
            shard[k] = (tokens, np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64))
        _memory[memo] = (provider, TokenStore([shard], list(lengths)))
    return _memory[memo][1]


__all__ = ["cache_root", "cache_key", "cache_path", "ensure_cache", "task_store"]
