"""Data sources: where a task's raw examples come from.

A :class:`DataSource` maps split names to an unbatched ``tf.data.Dataset`` of dicts of raw
features (text as ``tf.string``), via ``get_dataset(split, shuffle, seed, shard_info)``:

* :class:`TextLineSource`  plain text, feature ``text``: one example per non-blank line, per
  paragraph (blank-line separated, hard wraps joined) or per file (``documents=``).
* :class:`JSONLSource`     one JSON object per line, features picked by (nested) key.
* :class:`TFRecordSource`  serialized ``tf.train.Example`` records parsed with a feature spec.
* :class:`TFDSSource`      a TensorFlow Datasets builder (only if ``tensorflow_datasets`` is
  installed; nothing downloads unless the user asks TFDS to).
* :class:`FunctionSource`  any Python callable ``fn(split, shuffle, seed) -> tf.data.Dataset``.

File sources take ``{split: pattern or [patterns]}``; patterns are globs (local or ``gs://``);
files ending in ``.gz`` are read as gzip.

Behaviour that users rely on, fixed here once:

* **Determinism.** Files are sorted, then (``shuffle=True``) shuffled with ``seed``; files are read
  in parallel by a deterministic ``interleave``, so a fixed seed gives the same example order.
* **Sharding** (``shard_info=(index, count)``): with at least ``count`` files each shard reads
  every ``count``-th file (cheap, file-level); otherwise every shard reads all files and keeps
  every ``count``-th example. Either way shards are disjoint and together cover the split.
* **Bad input.** A pattern matching nothing is a :class:`DataError` naming the split and the
  pattern. Empty files are skipped with a warning; a split whose files are all empty, or hold
  only blank lines, is an error. Blank (empty or whitespace-only) lines are skipped. Bytes that
  are not valid UTF-8 are replaced by U+FFFD (like Python's ``errors="replace"``) instead of
  failing mid-training, with a warning naming each such file and its first such line. Malformed JSON,
  a missing key or a non-text value is a :class:`DataError` naming ``file:line`` (and the key).
  Errors found while a dataset is being iterated surface from TensorFlow as an ``OpError``; wrap
  the iteration in :func:`data_errors` (the CLI does) to get the plain :class:`DataError` back.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import re
from typing import Callable, Mapping, Sequence

from t5pre.errors import DataError

logger = logging.getLogger(__name__)

# Files read concurrently by one pipeline; more gives no speed on few cores but costs memory.
DEFAULT_PARALLEL_FILES = 16
# JSON lines parsed per Python call: amortises the py_function overhead (~50 us a call).
_JSON_BATCH = 256
# Text lines cleaned per vectorised step.
_LINE_BLOCK = 1024


from t5pre.lazy import tensorflow as _tf  # noqa: E402


# ----------------------------------------------------------------------------------- errors
_DATA_ERROR_RE = re.compile(r"DataError: (.*)")


def as_data_error(error: BaseException) -> DataError | None:
    """The :class:`DataError` carried by a TensorFlow error raised while iterating a dataset
    (a ``DataError`` raised inside ``tf.py_function`` reaches the caller wrapped in an
    ``OpError`` with a Python traceback in its message), or ``None`` if it carries none."""
    if isinstance(error, DataError):
        return error
    tf = _tf()
    if isinstance(error, tf.errors.OpError):
        match = _DATA_ERROR_RE.search(error.message or "")
        if match:
            return DataError(match.group(1).strip())
        if isinstance(error, tf.errors.DataLossError):
            first = (error.message or "").strip().splitlines()[0] if error.message else ""
            return DataError(f"corrupt record in a data file: {first}")
    return None


@contextlib.contextmanager
def data_errors():
    """Context manager turning data errors raised by TensorFlow during iteration into a plain
    :class:`DataError` (message ``file:line: ...``) instead of a TensorFlow stack trace."""
    try:
        yield
    except Exception as e:  # noqa: BLE001 - re-raised unchanged unless it is a data error
        converted = as_data_error(e)
        if converted is None or converted is e:
            raise
        raise converted from None


# ------------------------------------------------------------------------------------ base
class DataSource:
    """Base class: a named set of splits, each readable as a ``tf.data.Dataset`` of dicts."""

    def __init__(self, splits: Sequence[str]):
        self._splits = tuple(splits)

    @property
    def splits(self) -> tuple:
        return self._splits

    def check_split(self, split: str) -> None:
        if split not in self._splits:
            raise DataError(f"{self.describe()}: no split {split!r}; it has {list(self._splits)}")

    def get_dataset(self, split: str = "train", shuffle: bool = True, seed: int = 0, shard_info=None):
        """Unbatched dataset of dicts of raw features for ``split``."""
        raise NotImplementedError

    def describe(self) -> str:
        """One line for ``t5pre tasks list``."""
        return type(self).__name__

    def __repr__(self):
        return f"<{self.describe()}>"


def _check_shard_info(shard_info):
    if shard_info is None:
        return None
    try:
        index, count = (int(v) for v in shard_info)
    except (TypeError, ValueError):
        raise DataError(f"shard_info must be (index, count), got {shard_info!r}") from None
    if count < 1 or not 0 <= index < count:
        raise DataError(f"shard_info {shard_info!r}: need 0 <= index < count")
    return index, count


def shard_examples(dataset, shard_info):
    """Example-level sharding: shard ``index`` keeps examples ``index, index+count, ...``."""
    shard_info = _check_shard_info(shard_info)
    if shard_info is None or shard_info[1] == 1:
        return dataset
    index, count = shard_info
    return dataset.shard(count, index)


# ------------------------------------------------------------------------------ file sources
def _as_pattern_list(split, patterns) -> list[str]:
    if isinstance(patterns, str) or hasattr(patterns, "__fspath__"):
        patterns = [patterns]
    patterns = [str(p) for p in patterns]
    if not patterns:
        raise DataError(f"split {split!r}: no file pattern given")
    return patterns


class FileSource(DataSource):
    """A source reading files: ``split_to_filepattern`` maps a split to a glob or list of globs.

    Subclasses implement :meth:`read_file` (a filename tensor -> dataset of feature dicts).
    """

    kind = "files"
    # Text formats whose blank lines are skipped (a split of blank files has no examples).
    skips_blank_lines = False

    def __init__(self, split_to_filepattern: Mapping[str, object], *, num_parallel_files: int = DEFAULT_PARALLEL_FILES):
        if not split_to_filepattern:
            raise DataError(f"{type(self).__name__}: no splits given")
        self._patterns = {s: _as_pattern_list(s, p) for s, p in split_to_filepattern.items()}
        self._num_parallel_files = num_parallel_files
        super().__init__(list(self._patterns))

    @property
    def split_to_filepattern(self) -> dict:
        return dict(self._patterns)

    def list_files(self, split: str) -> list[str]:
        """Sorted, de-duplicated files of ``split``; DataError if a pattern matches nothing."""
        self.check_split(split)
        tf = _tf()
        files = []
        for pattern in self._patterns[split]:
            try:
                matched = tf.io.gfile.glob(pattern)
            except tf.errors.OpError as e:
                raise DataError(f"split {split!r}: cannot list {pattern!r}: {e.message}") from None
            matched = [f for f in matched if not tf.io.gfile.isdir(f)]
            if not matched:
                raise DataError(f"split {split!r}: no file matches {pattern!r}")
            files.extend(matched)
        return sorted(set(files))

    def _non_empty_files(self, split: str) -> list[str]:
        tf = _tf()
        files, empty = [], []
        for f in self.list_files(split):
            (files if tf.io.gfile.stat(f).length > 0 else empty).append(f)
        for f in empty:
            logger.warning("split %r: skipping empty file %s", split, f)
        if not files:
            raise DataError(f"split {split!r}: every file is empty: {', '.join(empty)}")
        # Blank lines are skipped, so files holding nothing but whitespace would give a dataset
        # with no examples at all, which training would only notice as a stalled or empty
        # pipeline. One file with a non-blank byte suffices (normally the first read finds one).
        if self.skips_blank_lines and not any(_has_non_blank_text(f) for f in files):
            raise DataError(f"split {split!r}: no text: every line is blank in {', '.join(files)}")
        return files

    def get_dataset(self, split: str = "train", shuffle: bool = True, seed: int = 0, shard_info=None):
        tf = _tf()
        files = self._non_empty_files(split)
        shard_info = _check_shard_info(shard_info)
        example_sharding = None
        if shard_info is not None and shard_info[1] > 1:
            index, count = shard_info
            if len(files) >= count:
                files = files[index::count]
            else:
                example_sharding = shard_info
        if shuffle:
            random.Random(seed).shuffle(files)
        cycle = max(1, min(len(files), self._num_parallel_files))
        parallel = dict(num_parallel_calls=tf.data.AUTOTUNE, deterministic=True) if cycle > 1 else {}
        dataset = tf.data.Dataset.from_tensor_slices(files).interleave(
            self.read_file, cycle_length=cycle, block_length=1, **parallel
        )
        if example_sharding is not None:
            dataset = shard_examples(dataset, example_sharding)
        return dataset

    def read_file(self, filename):
        raise NotImplementedError

    def describe(self) -> str:
        parts = ", ".join(f"{s}={' '.join(p)}" for s, p in self._patterns.items())
        return f"{type(self).__name__}({parts})"


_SCAN_BLOCK = 1 << 16


def _has_non_blank_text(path: str) -> bool:
    """Whether a (possibly gzip) file holds any non-whitespace byte; reads only until it finds
    one, so a normal file costs one small read."""
    import gzip
    import zlib

    tf = _tf()
    try:
        with tf.io.gfile.GFile(path, "rb") as raw:
            f = gzip.GzipFile(fileobj=raw) if path.endswith(".gz") else raw
            while True:
                block = f.read(_SCAN_BLOCK)
                if not block:
                    return False
                if block.strip():
                    return True
    except (OSError, EOFError, zlib.error, tf.errors.OpError) as e:
        message = getattr(e, "message", None) or str(e)
        raise DataError(f"{path}: cannot read it ({message})") from None


def _compression(filename):
    tf = _tf()
    return tf.where(tf.strings.regex_full_match(filename, r".*\.gz"), "GZIP", "")


def _text_lines(filename):
    """Lines of a (possibly gzip) text file, compression chosen from the file name."""
    tf = _tf()
    return tf.data.TextLineDataset(filename, compression_type=_compression(filename))


def fix_utf8(text):
    """Replace bytes that are not valid UTF-8 with U+FFFD, inside TensorFlow."""
    tf = _tf()
    return tf.strings.unicode_transcode(text, "UTF-8", "UTF-8", errors="replace", replacement_char=0xFFFD)


def _warn_not_utf8(warned: set, filename: str, line_number: int, error: UnicodeDecodeError):
    """Bad bytes are replaced by U+FFFD (text and JSON Lines files alike), but said: once per
    file (``warned`` holds the files already reported), naming the first bad line."""
    if filename in warned:
        return
    warned.add(filename)
    logger.warning("%s:%d: bytes that are not valid UTF-8 (%s at byte %d) were replaced by U+FFFD; "
                   "later ones in this file are not reported", filename, line_number, error.reason,
                   error.start)


def _not_blank(line):
    tf = _tf()
    return tf.strings.length(tf.strings.strip(line)) > 0


#: How a plain-text file is cut into documents (``TextLineSource(documents=...)``).
TEXT_DOCUMENT_MODES = ("lines", "paragraphs", "file")
# Marks paragraph breaks inside one file's text before the split (ASCII record separator).
_PARAGRAPH_MARK = "\x1e"


class TextLineSource(FileSource):
    """Plain text files: ``{"text": document}`` (or ``field``), one per document.

    ``documents`` says what a document is:

    * ``"lines"``       one per non-blank line (the default);
    * ``"paragraphs"``  one per paragraph: paragraphs are separated by blank (or whitespace-only)
      lines, and the hard-wrapped lines inside one are joined with a space (a Project
      Gutenberg book becomes its paragraphs, not 70-character fragments);
    * ``"file"``        one per file (the whole text, surrounding whitespace stripped).

    ``paragraphs`` and ``file`` read each file into memory whole (fine for books and articles;
    a multi-gigabyte single file wants ``lines`` or JSON Lines). Blank documents are skipped in
    every mode, and bad UTF-8 is replaced and reported the same way.
    """

    skips_blank_lines = True

    def __init__(self, split_to_filepattern, *, field: str = "text", documents: str = "lines",
                 num_parallel_files: int = DEFAULT_PARALLEL_FILES):
        if documents not in TEXT_DOCUMENT_MODES:
            raise DataError(f"TextLineSource: documents must be one of "
                            f"{', '.join(TEXT_DOCUMENT_MODES)}, got {documents!r}")
        super().__init__(split_to_filepattern, num_parallel_files=num_parallel_files)
        self.field = field
        self.documents = documents
        self._files_not_utf8: set = set()

    def _warn_line(self, filename, number, line):
        """Python side, called only for a block holding bad bytes: warn about its first one."""
        filename = filename.numpy().decode("utf-8", errors="replace")
        raw = line.numpy()
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as e:
            _warn_not_utf8(self._files_not_utf8, filename, int(number.numpy()), e)
        return True

    def _warn_text(self, filename, text):
        """Python side, for a whole file holding bad bytes: warn naming its first bad line."""
        filename = filename.numpy().decode("utf-8", errors="replace")
        raw = text.numpy()
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as e:
            _warn_not_utf8(self._files_not_utf8, filename, raw.count(b"\n", 0, e.start) + 1, e)
        return True

    def read_file(self, filename):
        if self.documents == "lines":
            return self._read_lines(filename)
        return self._read_whole(filename)

    def _read_lines(self, filename):
        tf = _tf()
        field = self.field

        def clean(numbers, lines):  # vectorised over a block: per-element ops cost ~20 us each
            fixed = fix_utf8(lines)
            # Replacing a bad byte changes the line; a valid one comes back byte for byte.
            bad = tf.not_equal(fixed, lines)

            def warn():
                first = tf.argmax(tf.cast(bad, tf.int32), output_type=tf.int32)
                return tf.py_function(self._warn_line, [filename, numbers[first], lines[first]],
                                      tf.bool)

            warned = tf.cond(tf.reduce_any(bad), warn, lambda: tf.constant(False))
            with tf.control_dependencies([warned]):
                kept = tf.boolean_mask(fixed, _not_blank(fixed))
            return {field: kept}

        numbered = _text_lines(filename).enumerate(start=1)
        return numbered.batch(_LINE_BLOCK).map(clean).unbatch()

    def _read_whole(self, filename):
        """``paragraphs`` / ``file``: the file's lines (gzip-aware, like ``lines``) joined back
        into one string, then cut into documents with vectorised string ops."""
        tf = _tf()
        field, paragraphs = self.field, self.documents == "paragraphs"

        def documents(lines):
            raw = tf.strings.reduce_join(lines, separator="\n")
            text = fix_utf8(raw)
            warned = tf.cond(tf.not_equal(text, raw),
                             lambda: tf.py_function(self._warn_text, [filename, raw], tf.bool),
                             lambda: tf.constant(False))
            with tf.control_dependencies([warned]):
                text = tf.strings.regex_replace(text, "\r", "")
            if paragraphs:
                text = tf.strings.regex_replace(text, _PARAGRAPH_MARK, " ")
                # A blank line (only spaces or tabs on it) ends a paragraph ...
                text = tf.strings.regex_replace(text, r"\n[ \t\f\v]*\n\s*", _PARAGRAPH_MARK)
                # ... and the line breaks left inside a paragraph are hard wraps.
                text = tf.strings.regex_replace(text, r"[ \t]*\n[ \t]*", " ")
                parts = tf.strings.split(text, _PARAGRAPH_MARK)
            else:
                parts = tf.reshape(text, [1])
            parts = tf.strings.strip(parts)
            return {field: tf.boolean_mask(parts, _not_blank(parts))}

        # TextLineDataset strips each line's "\n"; one batch holds the whole file.
        whole = _text_lines(filename).batch(tf.int64.max)
        return whole.map(documents).unbatch()

    @property
    def output_keys(self):
        return (self.field,)

    def describe(self) -> str:
        described = super().describe()
        return described if self.documents == "lines" else \
            f"{described[:-1]}, documents={self.documents})"


def _key_path(spec) -> tuple:
    if isinstance(spec, str):
        return tuple(spec.split("."))
    return tuple(spec)


class JSONLSource(FileSource):
    """JSON Lines files: one JSON object per line.

    Args:
      split_to_filepattern: ``{split: glob or [globs]}``.
      fields: which values to output: a list of keys (output name = key) or a mapping
        ``{output_name: key}``; a key may be nested, written ``"a.b"`` or ``("a", "b")``. Values
        that are strings pass as is; numbers and booleans become their text.
      list_fields: output names whose value is a list of strings (e.g. several references);
        they come out as 1-D ``tf.string`` tensors.

    Parsing runs in Python (``json``), batched and interleaved over files.
    """

    skips_blank_lines = True

    def __init__(
        self,
        split_to_filepattern,
        fields: Sequence[str] | Mapping[str, object] = ("text",),
        *,
        list_fields: Sequence[str] = (),
        num_parallel_files: int = DEFAULT_PARALLEL_FILES,
    ):
        super().__init__(split_to_filepattern, num_parallel_files=num_parallel_files)
        if isinstance(fields, Mapping):
            self._fields = {str(k): _key_path(v) for k, v in fields.items()}
        else:
            self._fields = {str(f): _key_path(f) for f in fields}
        if not self._fields:
            raise DataError("JSONLSource: no fields given")
        self._list_fields = tuple(list_fields)
        self._files_not_utf8: set = set()
        unknown = [f for f in self._list_fields if f not in self._fields]
        if unknown:
            raise DataError(f"JSONLSource: list_fields {unknown} are not among fields {list(self._fields)}")

    @property
    def output_keys(self):
        return tuple(self._fields)

    def _parse_lines(self, filename, line_numbers, lines):
        """Python side: parse a batch of lines; returns one tensor per scalar field and
        (flat values, lengths) per list field."""
        filename = filename.numpy().decode("utf-8", errors="replace")
        scalar = {k: [] for k in self._fields if k not in self._list_fields}
        lists = {k: [] for k in self._list_fields}
        for number, raw in zip(line_numbers.numpy(), lines.numpy()):
            where = f"{filename}:{int(number)}"
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                text = raw.decode("utf-8", errors="replace")
                _warn_not_utf8(self._files_not_utf8, filename, int(number), e)
            try:
                record = json.loads(text)
            except ValueError as e:
                raise DataError(f"{where}: malformed JSON ({e})") from None
            for name, path in self._fields.items():
                value = _lookup(record, path, where)
                if name in lists:
                    lists[name].append(_as_text_list(value, where, path))
                else:
                    scalar[name].append(_as_text(value, where, path))
        outputs = [scalar[k] for k in scalar]
        for name in lists:
            values = lists[name]
            width = max([len(v) for v in values] + [0])
            outputs.append([v + [b""] * (width - len(v)) for v in values] if width else [[] for _ in values])
            outputs.append([len(v) for v in values])
        return outputs

    def read_file(self, filename):
        tf = _tf()
        scalar_names = [k for k in self._fields if k not in self._list_fields]
        list_names = list(self._list_fields)
        tout = [tf.string] * len(scalar_names) + [tf.string, tf.int32] * len(list_names)

        def parse(numbers, lines):
            outs = tf.py_function(self._parse_lines, [filename, numbers, lines], tout)
            features = {}
            for i, name in enumerate(scalar_names):
                features[name] = tf.ensure_shape(outs[i], [None])
            for j, name in enumerate(list_names):
                values, lengths = outs[len(scalar_names) + 2 * j], outs[len(scalar_names) + 2 * j + 1]
                features[name] = tf.ensure_shape(tf.reshape(values, [tf.shape(lengths)[0], -1]), [None, None])
                features[name + "/length"] = tf.ensure_shape(lengths, [None])
            return features

        def unpad(features):
            for name in list_names:
                features[name] = features[name][: features.pop(name + "/length")]
            return features

        lines = _text_lines(filename)
        numbered = lines.enumerate(start=1).filter(lambda n, line: _not_blank(line))
        dataset = numbered.batch(_JSON_BATCH).map(parse).unbatch()
        if list_names:
            dataset = dataset.map(unpad)
        return dataset


def _lookup(record, path, where):
    value = record
    for depth, key in enumerate(path):
        index = key if isinstance(key, int) else int(key) if key.lstrip("-").isdigit() else None
        if isinstance(value, dict) and str(key) in value:
            value = value[str(key)]
        elif isinstance(value, list) and index is not None and -len(value) <= index < len(value):
            value = value[index]
        else:
            shown = ".".join(str(k) for k in path[: depth + 1])
            present = sorted(value)[:10] if isinstance(value, dict) else type(value).__name__
            raise DataError(f"{where}: missing key {shown!r} (found: {present})")
    return value


def _as_text(value, where, path) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8", errors="replace")
    if isinstance(value, (int, float, bool)):
        return str(value).encode()
    kind = "null" if value is None else type(value).__name__
    raise DataError(f"{where}: key {'.'.join(map(str, path))!r} is {kind}, expected text")


def _as_text_list(value, where, path) -> list[bytes]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        kind = "null" if value is None else type(value).__name__
        raise DataError(f"{where}: key {'.'.join(map(str, path))!r} is {kind}, expected a list of text")
    return [_as_text(v, where, path) for v in value]


class TFRecordSource(FileSource):
    """TFRecord files of serialized ``tf.train.Example``; ``feature_spec`` maps feature names to
    ``tf.io.FixedLenFeature`` / ``VarLenFeature`` (default: one string feature ``text``)."""

    def __init__(self, split_to_filepattern, feature_spec=None, *, num_parallel_files: int = DEFAULT_PARALLEL_FILES):
        super().__init__(split_to_filepattern, num_parallel_files=num_parallel_files)
        tf = _tf()
        self.feature_spec = dict(feature_spec or {"text": tf.io.FixedLenFeature([], tf.string)})

    @property
    def output_keys(self):
        return tuple(self.feature_spec)

    def read_file(self, filename):
        tf = _tf()
        spec = self.feature_spec

        def parse(record):
            example = tf.io.parse_single_example(record, spec)
            return {k: tf.sparse.to_dense(v) if isinstance(v, tf.SparseTensor) else v for k, v in example.items()}

        records = tf.data.TFRecordDataset(filename, compression_type=_compression(filename))
        return records.map(parse, num_parallel_calls=tf.data.AUTOTUNE)


class TFDSSource(DataSource):
    """A TensorFlow Datasets builder, e.g. ``TFDSSource("cnn_dailymail:3.4.0")``.

    ``splits`` maps our split names to TFDS split expressions (default: the builder's own
    splits, read lazily). Sharding uses ``tfds.even_splits`` (disjoint, covering). Requires
    ``tensorflow_datasets`` and the data prepared in ``data_dir`` (``tfds build``); nothing
    downloads at training time.
    """

    def __init__(self, name: str, splits: Sequence[str] | Mapping[str, str] | None = None, *, data_dir: str | None = None):
        self.name = name
        self.data_dir = data_dir
        if isinstance(splits, Mapping):
            self._split_map = dict(splits)
        elif splits is not None:
            self._split_map = {s: s for s in splits}
        else:
            self._split_map = {"train": "train", "validation": "validation"}
        super().__init__(list(self._split_map))

    @staticmethod
    def _tfds():
        try:
            import tensorflow_datasets as tfds
        except ImportError:
            raise DataError(
                "this task reads TensorFlow Datasets, but tensorflow_datasets is not installed "
                "(pip install 't5pre[tfds]'), or use the task's local-file twin"
            ) from None
        return tfds

    def get_dataset(self, split: str = "train", shuffle: bool = True, seed: int = 0, shard_info=None):
        self.check_split(split)
        tfds = self._tfds()
        tfds_split = self._split_map[split]
        shard_info = _check_shard_info(shard_info)
        if shard_info is not None and shard_info[1] > 1:
            tfds_split = tfds.even_splits(tfds_split, n=shard_info[1], drop_remainder=False)[shard_info[0]]
        read_config = tfds.ReadConfig(shuffle_seed=seed, interleave_cycle_length=DEFAULT_PARALLEL_FILES)
        try:
            return tfds.load(
                self.name,
                split=tfds_split,
                data_dir=self.data_dir,
                shuffle_files=shuffle,
                read_config=read_config,
                download=False,
            )
        except Exception as e:  # noqa: BLE001 - TFDS raises many kinds; all mean "not available"
            raise DataError(f"TFDS dataset {self.name!r} split {tfds_split!r} is not available: {e}") from None

    def describe(self) -> str:
        return f"TFDSSource({self.name})"


class FunctionSource(DataSource):
    """A Python callable ``fn(split, shuffle, seed) -> tf.data.Dataset`` of dicts.

    Sharding is example-level (every shard calls ``fn`` and keeps every ``count``-th example),
    so ``fn`` must be deterministic for a given ``(split, shuffle, seed)``.
    """

    def __init__(self, fn: Callable, splits: Sequence[str] = ("train", "validation"), *, name: str | None = None,
                 fingerprint: str | Callable | None = None):
        super().__init__(splits)
        self.fn = fn
        self.name = name or getattr(fn, "__qualname__", repr(fn))
        # What identifies fn's data (a string, or fingerprint(split) -> str): lets training keep
        # its token cache across runs (t5pre.data.implicit_cache); None: tokenized at each start.
        self.fingerprint = fingerprint

    def get_dataset(self, split: str = "train", shuffle: bool = True, seed: int = 0, shard_info=None):
        self.check_split(split)
        tf = _tf()
        dataset = self.fn(split=split, shuffle=shuffle, seed=seed)
        if not isinstance(dataset, tf.data.Dataset):
            raise DataError(f"{self.describe()}: returned {type(dataset).__name__}, expected a tf.data.Dataset")
        return shard_examples(dataset, shard_info)

    def describe(self) -> str:
        return f"FunctionSource({self.name})"


def files_kind(data) -> str:
    """What a ``data.files`` run trains (``data``: a DataSection or its ``files_spec()``):
    ``pretraining`` (span corruption over text), ``seq2seq`` (input_field -> target_field,
    ROUGE) or ``qa`` (SQuAD JSON)."""
    get = data.get if isinstance(data, dict) else (lambda key: getattr(data, key))
    if get("format") == "squad":
        return "qa"
    return "seq2seq" if get("input_field") or get("target_field") else "pretraining"
