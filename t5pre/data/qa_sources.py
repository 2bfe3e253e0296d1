"""Sources for the downstream tasks: SQuAD-format JSON files, and files under a data directory.

* :func:`read_squad_json` / :class:`SquadJSONSource`  extractive QA in the official SQuAD layout;
* :class:`DataDirSource`  a source whose files live under ``$T5PRE_DATA_DIR``, resolved only when
  a dataset is requested, so that catalogue tasks register on any machine and a missing file is
  reported (path and variable named) to the one user who asks for it.

The SQuAD layout (v1.1, and what most QA datasets exported "in SQuAD format" follow)::

    {"version": "1.1",
     "data": [{"title": "...",
               "paragraphs": [{"context": "...",
                               "qas": [{"id": "...", "question": "...",
                                        "answers": [{"text": "...", "answer_start": 17}, ...]},
                                       ...]}]}]}

Every question becomes one example ``{"id", "title", "context", "question", "answers"}`` with
``answers`` the list of all gold answer texts (duplicates kept, in file order: the first one is the
training target, all of them count in evaluation, as in T5). The reader is pure Python so that a
malformed file fails with a :class:`~t5pre.errors.DataError` naming the file and the field,
before TensorFlow sees anything.
"""

from __future__ import annotations

import glob
import json
import os
import random
from typing import Callable, Dict, Iterator, List, Mapping, Sequence, Union

from t5pre.data.sources import DataSource, shard_examples
from t5pre.errors import DataError

#: The environment variable naming the directory that file-based catalogue tasks read.
DATA_DIR_ENV = "T5PRE_DATA_DIR"

SQUAD_FIELDS = ("id", "title", "context", "question", "answers")


def _require(container, key: str, kind, where: str, path: str):
    """``container[key]`` checked to be a ``kind``; a DataError names the file and the field."""
    if not isinstance(container, dict) or key not in container:
        raise DataError(f"{path}: {where} has no {key!r} field (expected the SQuAD JSON layout)")
    value = container[key]
    if not isinstance(value, kind):
        expected = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise DataError(f"{path}: {where}.{key} is {type(value).__name__}, expected {expected}")
    return value


def read_squad_json(path: Union[str, os.PathLike], require_answers: bool = True) -> Iterator[Dict]:
    """Yields one example dict per question of the SQuAD-format file at ``path``.

    ``require_answers=False`` accepts questions without answers (a test set to predict on); their
    ``answers`` is an empty list. Otherwise a question with no answer is a DataError, since it
    could be neither a target nor scored.
    """
    path = os.fspath(path)
    try:
        if "://" in path:  # gs://, s3://...: through TensorFlow's file system layer
            import tensorflow as tf

            if not tf.io.gfile.exists(path):
                raise FileNotFoundError(path)
            with tf.io.gfile.GFile(path, "rb") as handle:
                document = json.loads(handle.read().decode("utf-8"))
        else:
            with open(path, encoding="utf-8") as handle:
                document = json.load(handle)
    except FileNotFoundError:
        raise DataError(f"SQuAD file not found: {path}") from None
    except json.JSONDecodeError as error:
        raise DataError(f"{path}: not valid JSON (line {error.lineno}, column {error.colno}: {error.msg})") from None
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None

    articles = _require(document, "data", list, "the top level", path)
    for a, article in enumerate(articles):
        where = f"data[{a}]"
        title = article.get("title", "") if isinstance(article, dict) else ""
        paragraphs = _require(article, "paragraphs", list, where, path)
        for p, paragraph in enumerate(paragraphs):
            where_p = f"{where}.paragraphs[{p}]"
            context = _require(paragraph, "context", str, where_p, path)
            questions = _require(paragraph, "qas", list, where_p, path)
            for q, qa in enumerate(questions):
                where_q = f"{where_p}.qas[{q}]"
                question = _require(qa, "question", str, where_q, path)
                raw_answers = qa.get("answers", []) if isinstance(qa, dict) else []
                if not isinstance(raw_answers, list):
                    raise DataError(f"{path}: {where_q}.answers is {type(raw_answers).__name__}, expected list")
                answers: List[str] = []
                for n, answer in enumerate(raw_answers):
                    answers.append(_require(answer, "text", str, f"{where_q}.answers[{n}]", path))
                if require_answers and not answers:
                    raise DataError(f"{path}: {where_q} (id {qa.get('id')!r}) has no answers")
                yield {
                    "id": str(qa.get("id", f"{a}-{p}-{q}")),
                    "title": str(title),
                    "context": context,
                    "question": question,
                    "answers": answers,
                }


def read_squad_files(paths: Sequence[Union[str, os.PathLike]], require_answers: bool = True) -> Iterator[Dict]:
    """:func:`read_squad_json` over several files, in order."""
    for path in paths:
        yield from read_squad_json(path, require_answers=require_answers)


def _expand(patterns: Sequence[str]) -> List[str]:
    """Sorted files matching the glob ``patterns`` (remote ones through ``tf.io.gfile``)."""
    files = []
    for pattern in patterns:
        if "://" in pattern:
            import tensorflow as tf

            matched = tf.io.gfile.glob(pattern)
        else:
            matched = [f for f in glob.glob(os.path.expanduser(pattern)) if os.path.isfile(f)]
        if not matched:
            raise DataError(f"no file matches {pattern!r}")
        files.extend(matched)
    return sorted(set(files))


def _pattern_list(patterns) -> List[str]:
    if isinstance(patterns, (str, os.PathLike)):
        return [os.fspath(patterns)]
    return [os.fspath(p) for p in patterns]


class SquadJSONSource(DataSource):
    """Files in the SQuAD JSON layout, one example per question.

    Examples: ``{"id", "title", "context", "question"}`` as ``tf.string`` scalars and
    ``answers`` as a 1-D ``tf.string`` (all gold answers). The files of a split are parsed in
    Python when the dataset is built (SQuAD-sized files take a fraction of a second), so that
    malformed input fails right away with a :class:`DataError` naming file and field, not later
    inside a ``tf.data`` iterator. Files are shuffled with ``seed`` when ``shuffle``; sharding is
    by example (shards disjoint, covering the split).
    """

    def __init__(self, split_to_filepattern: Mapping[str, object], require_answers: bool = True):
        if not split_to_filepattern:
            raise DataError("SquadJSONSource: no splits given")
        self._patterns = {split: _pattern_list(p) for split, p in split_to_filepattern.items()}
        self.require_answers = require_answers
        super().__init__(list(self._patterns))

    @property
    def output_keys(self):
        return SQUAD_FIELDS

    def list_files(self, split: str) -> List[str]:
        self.check_split(split)
        try:
            return _expand(self._patterns[split])
        except DataError as error:
            raise DataError(f"{self.describe()}: split {split!r}: {error}") from None

    def get_dataset(self, split: str = "train", shuffle: bool = True, seed: int = 0, shard_info=None):
        import tensorflow as tf

        files = self.list_files(split)
        if shuffle:
            random.Random(seed).shuffle(files)
        examples = list(read_squad_files(files, require_answers=self.require_answers))
        if not examples:
            raise DataError(f"{self.describe()}: split {split!r} has no questions in {', '.join(files)}")

        def generate():
            yield from examples

        scalar = tf.TensorSpec([], tf.string)
        signature = {key: scalar for key in SQUAD_FIELDS if key != "answers"}
        signature["answers"] = tf.TensorSpec([None], tf.string)
        dataset = tf.data.Dataset.from_generator(generate, output_signature=signature)
        # The number of questions is known: let tf.data and progress bars see it.
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(len(examples)))
        return shard_examples(dataset, shard_info)

    def describe(self) -> str:
        parts = ", ".join(f"{s}={' '.join(p)}" for s, p in self._patterns.items())
        return f"SquadJSONSource({parts})"


class DataDirSource(DataSource):
    """A file source under the data directory ``$T5PRE_DATA_DIR``, resolved at read time.

    ``relative_splits`` maps a split to a path (or glob, or list of them) relative to the data
    directory; ``make_source({split: [absolute patterns]})`` builds the real source (e.g. a
    ``JSONLSource``) once the directory is known. Nothing is looked up at construction, so a
    catalogue task built on it registers everywhere; requesting a split whose files are absent
    raises a :class:`DataError` naming the task, the missing path and the variable.
    """

    def __init__(
        self,
        relative_splits: Mapping[str, object],
        make_source: Callable[[Dict[str, List[str]]], DataSource],
        *,
        name: str = "",
        env_var: str = DATA_DIR_ENV,
    ):
        if not relative_splits:
            raise DataError(f"DataDirSource {name!r}: no splits given")
        self._relative = {split: _pattern_list(p) for split, p in relative_splits.items()}
        self._make_source = make_source
        self.name = name
        self.env_var = env_var
        super().__init__(list(self._relative))

    @property
    def relative_splits(self) -> Dict[str, List[str]]:
        return dict(self._relative)

    def data_dir(self) -> str:
        """The data directory: ``$T5PRE_DATA_DIR``; a DataError when it is unset or absent."""
        what = f"task {self.name!r}" if self.name else "this task"
        layout = ", ".join(p for patterns in self._relative.values() for p in patterns)
        value = os.environ.get(self.env_var, "").strip()
        if not value:
            raise DataError(
                f"{what} reads local files under ${self.env_var}, which is not set; "
                f"set {self.env_var} to the directory holding {layout}"
            )
        path = os.path.expanduser(value)
        if "://" not in path and not os.path.isdir(path):
            raise DataError(f"{what}: {self.env_var}={value} is not a directory (expected it to hold {layout})")
        return path

    def resolve(self, split: str) -> List[str]:
        """Absolute patterns of ``split``; a DataError names the first one that matches nothing."""
        self.check_split(split)
        root = self.data_dir()
        patterns = [p if os.path.isabs(p) or "://" in p else os.path.join(root, p) for p in self._relative[split]]
        for pattern in patterns:
            try:
                _expand([pattern])
            except DataError:
                what = f"task {self.name!r}" if self.name else "this task"
                present = self.present_splits()
                hint = ""
                if present:
                    hint = (f"; the splits present are {', '.join(present)}: e.g. --set "
                            f"data.train_split={present[0]} --set data.eval_split={present[-1]}")
                raise DataError(
                    f"{what}, split {split!r}: missing data file {pattern} "
                    f"(looked under {self.env_var}={os.environ.get(self.env_var)}){hint}"
                ) from None
        return patterns

    def present_splits(self) -> List[str]:
        """The splits whose files exist under the data directory."""
        root = self.data_dir()
        present = []
        for split, patterns in self._relative.items():
            try:
                _expand([p if os.path.isabs(p) or "://" in p else os.path.join(root, p)
                         for p in patterns])
            except DataError:
                continue
            present.append(split)
        return present

    def get_dataset(self, split: str = "train", shuffle: bool = True, seed: int = 0, shard_info=None):
        source = self._make_source({split: self.resolve(split)})
        return source.get_dataset(split=split, shuffle=shuffle, seed=seed, shard_info=shard_info)

    def describe(self) -> str:
        parts = ", ".join(f"{s}={' '.join(p)}" for s, p in self._relative.items())
        return f"DataDirSource(${self.env_var}: {parts})"
