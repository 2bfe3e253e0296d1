"""A preprocessed, random-access token cache of a task (``t5pre data cache TASK --out DIR``).

Layout of ``DIR``::

    manifest.json                         written last, atomically: a cache without it is unfinished
    <split>/shard-00000.<feature>.tokens  token ids, little-endian uint16 (vocabularies <= 65,536)
                                          or uint32, the documents back to back
    <split>/shard-00000.<feature>.offsets int64, documents + 1 entries (0 first)

What is stored is the task's *deterministic* part: for a pretraining task (tokenize -> chunk ->
objective) the tokenized documents, for any other task its fully preprocessed examples (built at
the given sequence lengths). Chunking and the denoising objective run at read time
(:mod:`t5pre.data.random_access`), so every pass gets fresh noise and chunk boundaries.

Reading needs numpy only (files are memory-mapped), so a JAX host without TensorFlow can train
from a cache built elsewhere; building uses the task's TF pipeline, one process per shard.

The manifest records the task, the source files with sizes and mtimes, the vocabulary's sha256,
the counts of documents and tokens, the shard files with sizes and sha256. :func:`open_cache`
checks, in O(1): the manifest, the vocabulary, that every shard file exists with its recorded
size, and (given the task) that the source files are unchanged; :meth:`TokenCache.verify`
re-hashes every shard. Each problem is one :class:`~t5pre.errors.DataError` line naming it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from typing import Mapping, Sequence

import numpy as np

from t5pre.data import build_progress
from t5pre.errors import DataError

MANIFEST = "manifest.json"
FORMAT = "t5pre-token-cache"
VERSION = 1
_BATCH = 256  # documents per write


# ---------------------------------------------------------------------------- task anatomy
def pretraining_parts(task):
    """``(stop, chunk_options, objective)`` when the task is tokenize -> chunk -> objective
    (``stop``: how many preprocessors are deterministic), else ``(None, None, None)``."""
    from t5pre.data.denoising import DenoisingObjective

    preprocessors = list(getattr(task, "preprocessors", ()))
    for position, preprocessor in enumerate(preprocessors):
        options = getattr(preprocessor, "chunk_options", None)
        if options is not None:
            rest = preprocessors[position + 1:]
            if len(rest) == 1 and isinstance(rest[0], DenoisingObjective):
                return position, dict(options), rest[0]
            raise DataError(f"task {task.name!r}: a cached pretraining task must end with "
                            "split_into_chunks followed by one denoising objective")
    return None, None, None


def vocabulary_checksum(vocabulary) -> str:
    """sha256 of the SentencePiece model with its sentinels (what decides every token id)."""
    model = getattr(vocabulary, "serialized_model", None)
    if model is None:
        model = repr((type(vocabulary).__name__, int(vocabulary.vocab_size))).encode()
    return hashlib.sha256(model).hexdigest()


def _token_dtype(vocab_size: int):
    return np.dtype("<u2") if int(vocab_size) <= 1 << 16 else np.dtype("<u4")


def source_fingerprint(task, splits) -> dict | None:
    """What identifies the data of ``task``'s ``splits`` at its source, or None when t5pre cannot
    tell (a Python function without a ``fingerprint``): files with sizes and mtimes, a TFDS
    dataset's name and directory, or the ``fingerprint`` a source offers (a string, or a callable
    ``fingerprint(split) -> str``; the default corpus offers its extractor's key)."""
    source = task.source
    if hasattr(source, "list_files"):
        return {"files": _source_files(task, splits)}
    offered = getattr(source, "fingerprint", None)
    if callable(offered):
        return {"offered": {split: offered(split) for split in splits}}
    if isinstance(offered, str):
        return {"offered": offered}
    if type(source).__name__ == "TFDSSource":
        return {"tfds": source.describe(), "data_dir": getattr(source, "data_dir", None),
                "splits": list(splits)}
    return None


def _source_files(task, splits) -> dict:
    """``{split: [{path, bytes, mtime_ns}]}`` of a file source, ``{}`` for other sources."""
    list_files = getattr(task.source, "list_files", None)
    if list_files is None:
        return {}
    out = {}
    for split in splits:
        entries = []
        try:
            paths = list_files(split)
        except ImportError:  # no TensorFlow (a JAX host): local globs are enough for checking
            import glob

            patterns = task.source.split_to_filepattern.get(split, [])
            paths = sorted({p for pattern in patterns for p in glob.glob(pattern)
                            if os.path.isfile(p)})
        for path in paths:
            stat = os.stat(path)
            entries.append({"path": os.path.abspath(path), "bytes": stat.st_size,
                            "mtime_ns": stat.st_mtime_ns})
        out[split] = entries
    return out


# --------------------------------------------------------------------------------- building
class _ShardWriter:
    """Appends documents to one shard's files (tmp names, renamed when complete)."""

    def __init__(self, directory, name, features, dtype):
        self.directory, self.name, self.dtype = directory, name, dtype
        self.features = list(features)
        self.files = {f: open(self._path(f, "tokens") + ".tmp", "wb") for f in self.features}
        self.hashes = {f: hashlib.sha256() for f in self.features}
        self.offsets = {f: [np.zeros(1, np.int64)] for f in self.features}
        self.totals = {f: 0 for f in self.features}
        self.documents = 0

    def _path(self, feature, kind):
        return os.path.join(self.directory, f"{self.name}.{feature}.{kind}")

    def write(self, feature, flat_values, row_lengths):
        data = np.asarray(flat_values).astype(self.dtype).tobytes()
        self.files[feature].write(data)
        self.hashes[feature].update(data)
        ends = self.totals[feature] + np.cumsum(np.asarray(row_lengths, np.int64))
        self.offsets[feature].append(ends)
        self.totals[feature] = int(ends[-1]) if len(ends) else self.totals[feature]

    def close(self) -> dict:
        entry = {"name": self.name, "files": {}, "tokens": {}}
        for feature in self.features:
            self.files[feature].close()
            offsets = np.concatenate(self.offsets[feature]).astype("<i8")
            documents = len(offsets) - 1
            if self.documents and documents != self.documents:
                raise DataError(f"cache shard {self.name}: features have different counts")
            self.documents = documents
            offsets_path = self._path(feature, "offsets")
            with open(offsets_path + ".tmp", "wb") as f:
                f.write(offsets.tobytes())
            tokens_path = self._path(feature, "tokens")
            for path, digest in ((tokens_path, self.hashes[feature].hexdigest()),
                                 (offsets_path, hashlib.sha256(offsets.tobytes()).hexdigest())):
                os.replace(path + ".tmp", path)
                entry["files"][os.path.basename(path)] = {"bytes": os.path.getsize(path),
                                                          "sha256": digest}
            entry["tokens"][feature] = self.totals[feature]
        entry["documents"] = self.documents
        return entry


def _tokenized_blocks(task, split, index, count, features, stop, separator, sequence_length):
    """Yields ``(feature, flat_values, row_lengths)`` of shard ``index`` of ``count`` of ``split``:
    the task's deterministic preprocessors (all of them for a task that is not pretraining)."""
    import tensorflow as tf

    shard_info = (index, count) if count > 1 else None
    dataset = task.source.get_dataset(split=split, shuffle=False, seed=0, shard_info=shard_info)
    if dataset.cardinality() == tf.data.INFINITE_CARDINALITY:
        raise DataError(f"task {task.name!r} split {split!r}: its source "
                        f"({task.source.describe()}) is infinite; training tokenizes a source once "
                        "and repeats it itself, so the source must be finite (drop its .repeat())")
    dataset = task.preprocess(dataset, sequence_length, split, 0, False, shard_info, stop=stop)
    if stop is None:
        dataset = task._check_and_trim(dataset, sequence_length)
    spec = dataset.element_spec
    missing = [f for f in features if f not in spec]
    if missing:
        raise DataError(f"task {task.name!r}: preprocessed examples lack {missing} to cache")
    def flatten(block):
        out = {}
        for f in features:
            values = block[f]
            if not isinstance(values, tf.RaggedTensor):
                values = tf.RaggedTensor.from_tensor(values)
            out[f] = (tf.cast(values.flat_values, tf.int64), values.row_lengths())
        return out

    dataset = dataset.map(lambda ex: {f: ex[f] for f in features}).ragged_batch(_BATCH)
    for block in dataset.map(flatten).prefetch(2).as_numpy_iterator():
        for feature in features:
            flat, lengths = block[feature]
            if separator is not None:
                flat = np.insert(flat, np.cumsum(lengths), separator)
                lengths = lengths + 1
            yield feature, flat, lengths


def _build_shard(task, split, index, count, directory, features, dtype, stop, separator,
                 sequence_length):
    """Tokenize shard ``index`` of ``count`` of ``split`` into ``directory``; its manifest entry."""
    writer = _ShardWriter(directory, f"shard-{index:05d}", features, dtype)
    for feature, flat, lengths in _tokenized_blocks(task, split, index, count, features, stop,
                                                    separator, sequence_length):
        writer.write(feature, flat, lengths)
        if feature == features[0]:
            build_progress.count(len(lengths), len(flat))
    entry = writer.close()
    build_progress.count(0, 0, shards=1)
    return entry


def _cache_layout(task, sequence_length):
    """``(kind, features, stop, separator)`` of what a cache of ``task`` stores."""
    stop, chunk_options, _ = pretraining_parts(task)
    if stop is not None:
        return ("documents", [chunk_options["feature_key"]], stop,
                chunk_options["document_separator_id"])
    if not sequence_length:
        raise DataError(f"task {task.name!r} is not a pretraining task: caching its examples needs "
                        "sequence_length (--inputs-length/--targets-length)")
    return "examples", list(task.output_features), None, None


def in_memory_store(task, split, sequence_length=None) -> "TokenStore":
    """The :class:`TokenStore` a cache of ``task`` would hold for ``split``, built in memory on
    the fly (small data; also what a cache must equal)."""
    _, features, stop, separator = _cache_layout(task, sequence_length)
    flats = {f: [] for f in features}
    lengths = {f: [] for f in features}
    for feature, flat, row_lengths in _tokenized_blocks(task, split, 0, 1, features, stop,
                                                        separator, sequence_length):
        flats[feature].append(flat.astype(np.int32))
        lengths[feature].append(row_lengths)
    shard = {}
    for f in features:
        tokens = np.concatenate(flats[f]) if flats[f] else np.zeros(0, np.int32)
        rows = np.concatenate(lengths[f]) if lengths[f] else np.zeros(0, np.int64)
        shard[f] = (tokens, np.concatenate([[0], np.cumsum(rows)]).astype(np.int64))
    return TokenStore([shard], features)


def _build_shard_by_name(task_name, modules, *args):
    """:func:`_build_shard` in a spawned worker: import the modules that register the task."""
    import importlib

    from t5pre.lazy import import_tensorflow_quietly
    from t5pre.data.registry import get_task

    if os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "3":  # what the CLI set: keep its output clean
        import_tensorflow_quietly()
    for module in modules:
        importlib.import_module(module)
    return _build_shard(get_task(task_name), *args)


def _run_shards(jobs, workers, modules, progress=None):
    """Run the ``_build_shard`` jobs, in ``workers`` spawned processes when there are several;
    ``progress``: see :mod:`t5pre.data.build_progress`."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    with build_progress.tracking(progress, len(jobs), context) as tracker:
        if workers <= 1 or len(jobs) <= 1:
            return [_build_shard(*job) for job in jobs]
        return _run_in_pool(jobs, workers, modules, context, tracker)


def _run_in_pool(jobs, workers, modules, context, tracker):
    from t5pre.data.registry import get_task

    task = jobs[0][0]
    try:
        registered = get_task(task.name) is task
    except DataError:
        registered = False
    if not registered:
        raise DataError(f"task {task.name!r}: building with several workers needs a registered "
                        "task (the workers look it up by name); register it or use workers=1")
    named = [(task.name, list(modules)) + tuple(job[1:]) for job in jobs]
    with context.Pool(min(workers, len(jobs)), initializer=build_progress.use,
                      initargs=(tracker.counters,)) as pool:
        pending = pool.starmap_async(_build_shard_by_name, named)
        while not pending.ready():
            pending.wait(1.0)
            tracker.poll()
        return pending.get()


def build_cache(task, out_dir: str, splits: Sequence[str] | None = None, workers: int = 1,
                sequence_length: Mapping[str, int] | None = None, overwrite: bool = False,
                modules: Sequence[str] = (), progress=None, key: dict | None = None) -> dict:
    """Tokenize ``task``'s splits once into ``out_dir`` (see the module doc); returns the manifest.

    ``workers`` shards each split over processes (by files when the source has enough, by
    examples otherwise; workers import ``modules`` to find a task registered outside the
    catalogue). ``sequence_length`` is needed for tasks that are not pretraining tasks
    (their preprocessors trim to it) and recorded. The manifest is written last. ``progress``
    (e.g. ``print``) gets a progress line every few seconds (:mod:`t5pre.data.build_progress`);
    ``key`` is recorded as is (the implicit caches' key).
    """
    kind, features, stop, separator = _cache_layout(task, sequence_length)
    splits = list(splits or task.splits)
    for split in splits:
        task.check_split(split)
    if os.path.exists(os.path.join(out_dir, MANIFEST)) and not overwrite:
        raise DataError(f"cache {out_dir}: a cache is already there (pass overwrite/--overwrite)")
    vocabulary = task.vocabulary
    dtype = _token_dtype(vocabulary.vocab_size)
    started = time.time()
    jobs = []
    count = max(1, workers)
    for split in splits:  # every shard of every split in one pool of workers
        directory = os.path.join(out_dir, split)
        if os.path.isdir(directory):
            shutil.rmtree(directory)
        os.makedirs(directory)
        jobs += [(task, split, k, count, directory, features, dtype, stop, separator,
                  dict(sequence_length) if sequence_length else None) for k in range(count)]
    results = _run_shards(jobs, workers, modules, progress)
    manifest_splits = {}
    for split in splits:
        shards = [r for job, r in zip(jobs, results) if job[1] == split]
        manifest_splits[split] = {
            "documents": sum(s["documents"] for s in shards),
            "tokens": {f: sum(s["tokens"][f] for s in shards) for f in features},
            "shards": shards,
        }
    seconds = time.time() - started
    tokens = sum(s["tokens"][features[0]] for s in manifest_splits.values())
    manifest = {
        "format": FORMAT, "version": VERSION, "task": task.name, "kind": kind,
        "features": features, "dtype": dtype.str,
        "vocabulary": {"sha256": vocabulary_checksum(vocabulary),
                       "vocab_size": int(vocabulary.vocab_size)},
        "sequence_length": dict(sequence_length) if kind == "examples" else None,
        "document_separator_id": separator,
        "sources": _source_files(task, splits),
        "source_description": task.source.describe(),
        "key": key,
        "splits": manifest_splits,
        "build": {"seconds": round(seconds, 3), "workers": max(1, workers),
                  "tokens_per_second": round(tokens / seconds, 1) if seconds else None},
    }
    from t5pre.files import atomic_write_json

    atomic_write_json(os.path.join(out_dir, MANIFEST), manifest, indent=1)
    return manifest


# ---------------------------------------------------------------------------------- reading
class TokenStore:
    """Documents (or examples) of one split, random access: ``shards`` is a list of
    ``{feature: (tokens, offsets)}`` (memory maps or arrays), read as one concatenation."""

    def __init__(self, shards: Sequence[Mapping[str, tuple]], features: Sequence[str]):
        self.features = list(features)
        self._shards = [dict(s) for s in shards if len(s[self.features[0]][1]) > 1]
        first = self.features[0]
        self._doc_starts = np.cumsum([0] + [len(s[first][1]) - 1 for s in self._shards])
        self._token_starts = np.cumsum([0] + [int(s[first][1][-1]) for s in self._shards])

    @property
    def num_documents(self) -> int:
        return int(self._doc_starts[-1])

    @property
    def num_tokens(self) -> int:
        return int(self._token_starts[-1])

    def document(self, index: int, feature: str | None = None) -> np.ndarray:
        shard = int(np.searchsorted(self._doc_starts, index, side="right")) - 1
        tokens, offsets = self._shards[shard][feature or self.features[0]]
        local = index - self._doc_starts[shard]
        return np.asarray(tokens[offsets[local]:offsets[local + 1]])

    def stream(self, starts, length: int) -> np.ndarray:
        """``[rows, length]`` windows of the concatenated token stream of the first feature,
        read as a ring (a window running past the end continues at the start)."""
        feature = self.features[0]
        total = self.num_tokens
        out = np.empty((len(starts), length), np.int32)
        for row, start in enumerate(np.asarray(starts, np.int64)):
            pos, filled = int(start) % total, 0
            while filled < length:
                if pos >= total:
                    pos = 0
                shard = int(np.searchsorted(self._token_starts, pos, side="right")) - 1
                tokens = self._shards[shard][feature][0]
                local = pos - int(self._token_starts[shard])
                piece = tokens[local: local + length - filled]
                out[row, filled: filled + len(piece)] = piece
                filled += len(piece)
                pos += len(piece)
        return out


def _error(path, message):
    return DataError(f"cache {path}: {message}")


class TokenCache:
    """An opened cache directory (see :func:`open_cache`)."""

    def __init__(self, path: str, manifest: dict):
        self.path = path
        self.manifest = manifest

    @property
    def task_name(self) -> str:
        return self.manifest["task"]

    def num_documents(self, split: str) -> int:
        return int(self._split(split)["documents"])

    def _split(self, split):
        splits = self.manifest["splits"]
        if split not in splits:
            raise _error(self.path, f"has no split {split!r} (it has {sorted(splits)})")
        return splits[split]

    def _shard_path(self, split, name):
        return os.path.join(self.path, split, name)

    def split(self, split: str) -> TokenStore:
        """The split's :class:`TokenStore` over memory-mapped shards."""
        dtype = np.dtype(self.manifest["dtype"])
        features = self.manifest["features"]
        shards = []
        for shard in self._split(split)["shards"]:
            arrays = {}
            for feature in features:
                pair = []
                for kind, kind_dtype in (("tokens", dtype), ("offsets", np.dtype("<i8"))):
                    name = f"{shard['name']}.{feature}.{kind}"
                    size = shard["files"][name]["bytes"]
                    if size == 0:
                        pair.append(np.zeros(0, kind_dtype))
                    else:
                        pair.append(np.memmap(self._shard_path(split, name), kind_dtype, "r"))
                arrays[feature] = tuple(pair)
            tokens, offsets = arrays[features[0]]
            if len(offsets) != shard["documents"] + 1 or (len(offsets) and offsets[-1] != len(tokens)):
                raise _error(self.path, f"shard {split}/{shard['name']} is corrupt (its offsets do "
                             "not match its tokens); rebuild the cache")
            shards.append(arrays)
        return TokenStore(shards, features)

    def check_files(self) -> None:
        """Every shard file exists with its recorded size (O(1) per file)."""
        for split, entry in self.manifest["splits"].items():
            for shard in entry["shards"]:
                for name, info in shard["files"].items():
                    path = self._shard_path(split, name)
                    if not os.path.exists(path):
                        raise _error(self.path, f"shard file {split}/{name} is missing; rebuild "
                                     "the cache")
                    size = os.path.getsize(path)
                    if size != info["bytes"]:
                        raise _error(self.path, f"shard file {split}/{name} is corrupt: {size} "
                                     f"bytes, the manifest says {info['bytes']}; rebuild the cache")

    def verify(self) -> None:
        """:meth:`check_files` and a sha256 of every shard file against the manifest."""
        self.check_files()
        for split, entry in self.manifest["splits"].items():
            for shard in entry["shards"]:
                for name, info in shard["files"].items():
                    digest = hashlib.sha256()
                    with open(self._shard_path(split, name), "rb") as f:
                        for block in iter(lambda: f.read(1 << 22), b""):
                            digest.update(block)
                    if digest.hexdigest() != info["sha256"]:
                        raise _error(self.path, f"shard file {split}/{name} is corrupt (sha256 "
                                     "differs from the manifest); rebuild the cache")

    def check_vocabulary(self, vocabulary) -> None:
        want = self.manifest["vocabulary"]
        have = vocabulary_checksum(vocabulary)
        if have != want["sha256"]:
            raise _error(self.path, f"built with another vocabulary (vocab_size "
                         f"{want['vocab_size']}, sha256 {want['sha256'][:12]}) than the model's "
                         f"(vocab_size {int(vocabulary.vocab_size)}, sha256 {have[:12]}); rebuild "
                         "it with this vocabulary")

    def check_sources(self, task) -> None:
        """The task is the one cached and its source files are unchanged since the build."""
        if task.name != self.task_name:
            raise _error(self.path, f"holds task {self.task_name!r}, not {task.name!r}")
        recorded = self.manifest.get("sources") or {}
        if not recorded:
            return
        current = _source_files(task, list(recorded))
        for split, entries in recorded.items():
            now = {e["path"]: e for e in current.get(split, [])}
            for entry in entries:
                path = entry["path"]
                if path not in now:
                    raise _error(self.path, f"source file {path} ({split}) is gone since the "
                                 "cache was built; rebuild the cache")
                if (now[path]["bytes"], now[path]["mtime_ns"]) != (entry["bytes"], entry["mtime_ns"]):
                    raise _error(self.path, f"source file {path} ({split}) changed since the cache "
                                 f"was built ({entry['bytes']} -> {now[path]['bytes']} bytes or a "
                                 "new mtime); rebuild the cache")
            for path in sorted(set(now) - {e["path"] for e in entries}):
                raise _error(self.path, f"source file {path} ({split}) is new since the cache was "
                             "built; rebuild the cache")


def open_cache(path: str, task=None, vocabulary=None, check_sources: bool = True) -> TokenCache:
    """Open and check a cache directory (numpy only). See the module doc for what is checked."""
    manifest_path = os.path.join(path, MANIFEST)
    if not os.path.isdir(path):
        raise _error(path, "no such directory")
    if not os.path.exists(manifest_path):
        raise _error(path, f"no {MANIFEST}: not a t5pre cache, or its build did not finish")
    try:
        with open(manifest_path, encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, ValueError) as e:
        raise _error(path, f"{MANIFEST} is unreadable ({e}); rebuild the cache") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise _error(path, f"{MANIFEST} is not a t5pre token cache manifest")
    if manifest.get("version") != VERSION:
        raise _error(path, f"cache format version {manifest.get('version')}, this t5pre reads "
                     f"{VERSION}; rebuild the cache")
    cache = TokenCache(path, manifest)
    cache.check_files()
    if task is not None:
        if check_sources:
            cache.check_sources(task)
        vocabulary = vocabulary or task.vocabulary
    if vocabulary is not None:
        cache.check_vocabulary(vocabulary)
    return cache


__all__ = ["build_cache", "open_cache", "TokenCache", "TokenStore", "pretraining_parts",
           "vocabulary_checksum", "in_memory_store", "MANIFEST"]
