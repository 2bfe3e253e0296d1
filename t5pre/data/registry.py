"""Tasks and mixtures (seqio-like), and the registries that name them.

A :class:`Task` is a data source + a list of preprocessors + the output features (each with its
vocabulary) + how to evaluate (``metric_fns``, ``postprocess_fn``). ``Task.get_dataset`` builds
the pipeline in a fixed order, so that the same arguments always give the same examples:

1. the source's split (files shuffled with ``seed`` when ``shuffle``; sharded by ``shard_info``),
2. the preprocessors, in order; each gets a :class:`PreprocessContext` whose ``seed`` is distinct
   per preprocessor position (and per shard), for stateless random ops,
3. a check of the output features (int32, 1-D) and a trim to ``sequence_length``,
4. an example shuffle (seeded buffer) when ``shuffle``.

The source is repeated ``num_epochs`` times (``None``: forever; evaluation passes 1) *before*
the preprocessors, so that stochastic preprocessing (denoising) is drawn afresh on every pass,
as in T5/seqio, while staying a deterministic function of the seed and the stream position.

A :class:`Mixture` samples from several tasks with normalised rates. Names are looked up with
:func:`get_task` / :func:`get_mixture`, which import the catalogue (``t5pre.tasks``) on first use.

Both are a :class:`DatasetProvider`: what training, evaluation and the CLI may rely on whichever
of the two a config names (``name``, ``splits``, ``output_features``, ``vocabulary``,
``metric_fns``, ``get_dataset(...)``). :meth:`Task.replace` gives a modified copy of a task (e.g.
over another vocabulary) without registering it.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import importlib
import threading
from typing import Any, Callable, Mapping, Sequence

from t5pre.errors import ConfigError, DataError

DEFAULT_SHUFFLE_BUFFER = 10_000


@dataclasses.dataclass(frozen=True)
class Feature:
    """An output feature: token ids from ``vocabulary``, EOS appended when ``add_eos``.

    ``required=False`` features may be absent from a task's examples.
    """

    vocabulary: Any
    add_eos: bool = True
    required: bool = True


@dataclasses.dataclass(frozen=True)
class PreprocessContext:
    """What a preprocessor may know about the pipeline it runs in.

    ``seed`` is an int distinct per preprocessor position and per shard; random preprocessors
    must derive their stateless seeds from it (and from the example index) so that a pipeline
    is reproducible.
    """

    sequence_length: Mapping[str, int] | None
    output_features: Mapping[str, Feature]
    split: str
    seed: int
    shuffle: bool
    shard_info: tuple | None = None
    task_name: str = ""


def derive_seed(seed: int, *parts) -> int:
    """A stable 31-bit seed from ``seed`` and any labels (same inputs -> same seed, any process)."""
    digest = hashlib.sha256(repr((int(seed),) + tuple(parts)).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def _close_matches(name, names):
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
    if close:
        return f"; did you mean {', '.join(close)}?"
    return f"; known: {', '.join(sorted(names)[:30])}" if names else "; none is registered"


# ------------------------------------------------------------------------ DatasetProvider
class DatasetProvider:
    """What a :class:`Task` and a :class:`Mixture` both are: a named provider of examples.

    Subclasses set ``name`` and implement ``splits``, ``output_features`` and
    :meth:`_build_dataset` (what :meth:`get_dataset` returns once the split is checked);
    ``vocabulary`` and ``metric_fns`` follow from them by default.
    """

    name: str = ""
    kind = "provider"  # "task" / "mixture": how messages name it

    @property
    def splits(self) -> tuple:
        raise NotImplementedError

    @property
    def output_features(self) -> dict:
        raise NotImplementedError

    @property
    def vocabulary(self):
        """The vocabulary of ``targets`` (or of the first output feature); None without features."""
        features = self.output_features
        feature = features.get("targets") or next(iter(features.values()), None)
        return feature.vocabulary if feature else None

    @property
    def metric_fns(self) -> tuple:
        return ()

    def get_dataset(
        self,
        sequence_length: Mapping[str, int] | None = None,
        split: str = "train",
        shuffle: bool = True,
        seed: int = 0,
        shard_info=None,
        num_epochs: int | None = None,
        shuffle_buffer_size: int | None = None,
    ):
        """An unbatched ``tf.data.Dataset`` of examples holding (at least) the output features.

        ``num_epochs=None`` repeats forever; ``shard_info=(index, count)`` gives one of
        ``count`` disjoint shards; the same arguments always give the same examples."""
        self.check_split(split)
        return self._build_dataset(sequence_length, split, shuffle, int(seed), shard_info,
                                   num_epochs, shuffle_buffer_size)

    def _build_dataset(self, sequence_length, split, shuffle, seed, shard_info, num_epochs,
                       shuffle_buffer_size):
        raise NotImplementedError

    def check_split(self, split: str) -> None:
        """DataError naming the provider and its splits when it has no split ``split``."""
        if split not in self.splits:
            raise DataError(f"{self.kind} {self.name!r} has no split {split!r}; "
                            f"it has {list(self.splits)}")


# ------------------------------------------------------------------------------------- Task
class Task(DatasetProvider):
    """A named data pipeline: source -> preprocessors -> output features. See the module doc."""

    kind = "task"

    def __init__(
        self,
        name: str,
        source,
        preprocessors: Sequence[Callable] = (),
        output_features: Mapping[str, Feature] | None = None,
        metric_fns: Sequence[Callable] = (),
        postprocess_fn: Callable | None = None,
        shuffle_buffer_size: int = DEFAULT_SHUFFLE_BUFFER,
        description: str = "",
    ):
        if not name or not isinstance(name, str):
            raise DataError(f"a task needs a non-empty name, got {name!r}")
        if not hasattr(source, "get_dataset") or not hasattr(source, "splits"):
            raise DataError(f"task {name!r}: source must be a DataSource, got {type(source).__name__}")
        for p in preprocessors:
            if not callable(p):
                raise DataError(f"task {name!r}: preprocessor {p!r} is not callable")
        self.name = name
        self.source = source
        self.preprocessors = tuple(preprocessors)
        self._output_features = dict(output_features or {})
        for key, feature in self._output_features.items():
            if not isinstance(feature, Feature):
                raise DataError(f"task {name!r}: output feature {key!r} must be a Feature, got {type(feature).__name__}")
        self._metric_fns = tuple(metric_fns)
        self.postprocess_fn = postprocess_fn
        self.shuffle_buffer_size = shuffle_buffer_size
        self.description = description

    #: The constructor arguments, in order: what :meth:`replace` may change.
    FIELDS = ("name", "source", "preprocessors", "output_features", "metric_fns",
              "postprocess_fn", "shuffle_buffer_size", "description")

    @property
    def output_features(self) -> dict:
        return self._output_features

    @property
    def metric_fns(self) -> tuple:
        return self._metric_fns

    @property
    def splits(self) -> tuple:
        return tuple(self.source.splits)

    def replace(self, **changes) -> "Task":
        """A new task with the given constructor fields changed (see :attr:`FIELDS`), validated
        as a new task is; it is not registered, and ``self`` is unchanged.

        ``task.replace(output_features=...)`` reads the same text into other token ids;
        ``task.replace(name="x")`` followed by ``TaskRegistry.add_task`` registers a variant."""
        unknown = sorted(set(changes) - set(self.FIELDS))
        if unknown:
            raise DataError(f"task {self.name!r}: replace() got unknown fields {unknown}; "
                            f"a task has {list(self.FIELDS)}")
        values = {field: getattr(self, field) for field in self.FIELDS}
        values.update(changes)
        return type(self)(**values)

    def postprocess(self, text, example=None, is_target=False):
        """Apply ``postprocess_fn`` (if any) to decoded model output or a target text.

        ``postprocess_fn(text, example=None, is_target=False)`` (seqio's signature); a function
        taking only the text is called with the text alone.
        """
        fn = self.postprocess_fn
        if fn is None:
            return text
        import inspect

        try:
            params = inspect.signature(fn).parameters
        except (TypeError, ValueError):
            params = {}
        takes_kwargs = any(p.kind == p.VAR_KEYWORD for p in params.values())
        kwargs = {}
        if takes_kwargs or "example" in params:
            kwargs["example"] = example
        if takes_kwargs or "is_target" in params:
            kwargs["is_target"] = is_target
        return fn(text, **kwargs)

    def __repr__(self):
        return f"Task({self.name!r}, source={self.source.describe()}, features={list(self.output_features)})"

    def _build_dataset(self, sequence_length, split, shuffle, seed, shard_info, num_epochs,
                       shuffle_buffer_size):
        """Unbatched dataset of preprocessed examples (see the module doc for the order).

        A pretraining task (tokenize -> chunk -> objective) serves the random-access path's
        examples: example ``i`` is what training reads at global position ``i`` for this seed
        (its token cache is built once, see :mod:`t5pre.data.implicit_cache`)."""
        if sequence_length and _is_random_access(self):
            from t5pre.data.random_access import examples_dataset, random_access_pipeline

            pipeline = random_access_pipeline(self, sequence_length, split=split, seed=seed,
                                              shuffle=shuffle, log=_log_to_stderr)
            return examples_dataset(pipeline, shard_info=shard_info, num_epochs=num_epochs)
        shard_index = shard_info[0] if shard_info else 0
        dataset = self.source.get_dataset(split=split, shuffle=shuffle, seed=seed, shard_info=shard_info)
        # Repeat the *source*, not the preprocessed examples: random preprocessors (denoising)
        # keep counting their stream position across passes, so every pass draws fresh noise
        # (and, for chunked pretraining, new chunk boundaries), still fixed by the seed.
        if num_epochs is None:
            dataset = dataset.repeat()
        elif num_epochs != 1:
            dataset = dataset.repeat(num_epochs)
        dataset = self.preprocess(dataset, sequence_length, split, seed, shuffle, shard_info)
        dataset = self._check_and_trim(dataset, sequence_length)
        if shuffle:
            buffer = shuffle_buffer_size or self.shuffle_buffer_size
            dataset = dataset.shuffle(buffer, seed=derive_seed(seed, "shuffle", shard_index), reshuffle_each_iteration=True)
        return dataset

    def preprocess(self, dataset, sequence_length, split, seed, shuffle, shard_info=None,
                   stop: int | None = None):
        """Apply the preprocessors ``[:stop]`` (all by default) as :meth:`get_dataset` does."""
        import tensorflow as tf

        for position, preprocessor in enumerate(self.preprocessors[:stop]):
            ctx = self.context(sequence_length, split, seed, shuffle, shard_info, position)
            dataset = preprocessor(dataset, ctx)
            if not isinstance(dataset, tf.data.Dataset):
                name = getattr(preprocessor, "__name__", repr(preprocessor))
                raise DataError(f"task {self.name!r}: preprocessor {name} returned {type(dataset).__name__}, not a dataset")
        return dataset

    def context(self, sequence_length, split, seed, shuffle, shard_info=None, position=0):
        """The :class:`PreprocessContext` of preprocessor ``position``."""
        shard_index = shard_info[0] if shard_info else 0
        return PreprocessContext(
            sequence_length=dict(sequence_length) if sequence_length else None,
            output_features=self.output_features,
            split=split,
            seed=derive_seed(int(seed), "preprocessor", position, shard_index),
            shuffle=shuffle,
            shard_info=tuple(shard_info) if shard_info else None,
            task_name=self.name,
        )

    def _check_and_trim(self, dataset, sequence_length):
        import tensorflow as tf

        spec = dataset.element_spec
        if not isinstance(spec, dict):
            raise DataError(f"task {self.name!r}: examples must be dicts, the preprocessors produced {spec}")
        for key, feature in self.output_features.items():
            if key not in spec:
                if feature.required:
                    raise DataError(
                        f"task {self.name!r}: examples lack the output feature {key!r} "
                        f"(they have {sorted(spec)}); add a rekey/tokenize preprocessor"
                    )
                continue
            s = spec[key]
            if s.dtype == tf.string:
                raise DataError(f"task {self.name!r}: feature {key!r} is still text; add the tokenize preprocessor")
            if not s.dtype.is_integer or s.shape.rank != 1:
                raise DataError(f"task {self.name!r}: feature {key!r} must be 1-D int32 ids, got {s.dtype.name} {s.shape}")
        lengths = {k: v for k, v in (sequence_length or {}).items() if k in self.output_features and k in spec and v}
        casts = [k for k in self.output_features if k in spec and spec[k].dtype != tf.int32]
        if not lengths and not casts:
            return dataset

        def trim(example):
            example = dict(example)
            for key in casts:
                example[key] = tf.cast(example[key], tf.int32)
            for key, length in lengths.items():
                example[key] = example[key][:length]
            return example

        return dataset.map(trim, num_parallel_calls=tf.data.AUTOTUNE)


def _is_random_access(task) -> bool:
    """A pretraining task (tokenize -> split_into_chunks -> one objective): training and
    ``get_dataset`` read it by global index, with fresh chunks and noise every pass."""
    if getattr(task, "kind", None) != "task":
        return False
    from t5pre.data.cache import pretraining_parts

    try:
        return pretraining_parts(task)[0] is not None
    except DataError:
        return False


def _log_to_stderr(message: str) -> None:
    import sys

    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------- Mixture
class Mixture(DatasetProvider):
    """Samples examples from several tasks (or mixtures) with rates normalised to sum to 1.

    ``rate`` is a number or a callable ``rate(task) -> number``. Task names are resolved when
    the mixture is used, so a mixture may be registered before its tasks.
    """

    kind = "mixture"

    def __init__(self, name: str, tasks: Sequence, default_rate=None):
        self.name = name
        entries = []
        for item in tasks:
            if isinstance(item, (tuple, list)):
                if len(item) != 2:
                    raise DataError(f"mixture {name!r}: entries are (task, rate), got {item!r}")
                entries.append((item[0], item[1]))
            else:
                if default_rate is None:
                    raise DataError(f"mixture {name!r}: {item!r} has no rate and no default_rate was given")
                entries.append((item, default_rate))
        if not entries:
            raise DataError(f"mixture {name!r} has no tasks")
        self._entries = entries

    @property
    def tasks(self) -> list:
        return [_resolve(t, self.name) for t, _ in self._entries]

    def get_rate(self, task) -> float:
        for entry, rate in self._entries:
            resolved = _resolve(entry, self.name)
            if resolved.name == task.name:
                value = rate(resolved) if callable(rate) else rate
                try:
                    value = float(value)
                except (TypeError, ValueError):
                    raise DataError(f"mixture {self.name!r}: rate of {task.name!r} is {value!r}, not a number") from None
                if value < 0:
                    raise DataError(f"mixture {self.name!r}: rate of {task.name!r} is negative ({value})")
                return value
        raise DataError(f"mixture {self.name!r} has no task {task.name!r}")

    def rates(self) -> dict:
        """``{task name: normalised rate}``, zero-rate tasks left out."""
        raw = {t.name: self.get_rate(t) for t in self.tasks}
        total = sum(raw.values())
        if total <= 0:
            raise DataError(f"mixture {self.name!r}: all rates are zero")
        return {k: v / total for k, v in raw.items() if v > 0}

    @property
    def splits(self) -> tuple:
        splits = None
        for task in self.tasks:
            splits = list(task.splits) if splits is None else [s for s in splits if s in task.splits]
        return tuple(splits or ())

    @property
    def output_features(self) -> dict:
        tasks = self.tasks
        features = tasks[0].output_features
        for task in tasks[1:]:
            if sorted(task.output_features) != sorted(features):
                raise DataError(
                    f"mixture {self.name!r}: task {task.name!r} has features {sorted(task.output_features)}, "
                    f"{tasks[0].name!r} has {sorted(features)}"
                )
            for key, feature in task.output_features.items():
                if feature.vocabulary.vocab_size != features[key].vocabulary.vocab_size:
                    raise DataError(
                        f"mixture {self.name!r}: feature {key!r} of {task.name!r} has vocab_size "
                        f"{feature.vocabulary.vocab_size}, of {tasks[0].name!r} {features[key].vocabulary.vocab_size}"
                    )
        return dict(features)

    def __repr__(self):
        return f"Mixture({self.name!r}, {self.rates()})"

    def _build_dataset(self, sequence_length, split, shuffle, seed, shard_info, num_epochs,
                       shuffle_buffer_size):
        """Sampled mixture of the tasks' datasets (same arguments as :meth:`Task.get_dataset`).

        Examples keep only the output features, plus their ``*_pretokenized`` texts when every
        task has them (a pretraining task and a supervised task mix on ``inputs``/``targets``). With ``num_epochs`` set, sampling goes on until every task is exhausted.
        """
        import tensorflow as tf

        features = self.output_features
        if (sequence_length and num_epochs is None
                and all(_is_random_access(t) for t in self.tasks)):
            from t5pre.data.random_access import examples_dataset, random_access_pipeline

            pipeline = random_access_pipeline(self, sequence_length, split=split, seed=seed,
                                              shuffle=shuffle, log=_log_to_stderr)
            return examples_dataset(pipeline, shard_info=shard_info)
        rates = self.rates()
        tasks = {t.name: t for t in self.tasks}
        datasets, weights = [], []
        for name, rate in rates.items():
            task = tasks[name]
            ds = task.get_dataset(
                sequence_length=sequence_length,
                split=split,
                shuffle=shuffle,
                seed=derive_seed(seed, "mixture", name),
                shard_info=shard_info,
                num_epochs=num_epochs,
                shuffle_buffer_size=shuffle_buffer_size,
            )
            datasets.append(ds)
            weights.append(rate)
        # Keep the keys every task has: the output features always, the raw texts only when all
        # tasks carry them (a pretraining task has no *_pretokenized text to mix with).
        wanted = list(features) + [f"{k}_pretokenized" for k in features]
        shared = [k for k in wanted if all(k in d.element_spec for d in datasets)]
        missing = {t: [k for k in features if k not in d.element_spec]
                   for t, d in zip(rates, datasets)}
        missing = {t: ks for t, ks in missing.items() if ks}
        if missing:
            raise DataError(f"mixture {self.name!r}: tasks lack output features: {missing}")
        datasets = [d.map(lambda ex, keys=tuple(shared): {k: ex[k] for k in keys}) for d in datasets]
        specs = {tuple((k, d.element_spec[k].dtype.name) for k in shared) for d in datasets}
        if len(specs) > 1:
            raise DataError(f"mixture {self.name!r}: tasks produce different dtypes: {sorted(specs)}")
        if len(datasets) == 1:
            return datasets[0]
        return tf.data.Dataset.sample_from_datasets(
            datasets, weights=weights, seed=derive_seed(seed, "sample"), stop_on_empty_dataset=False
        )


def _resolve(task_or_name, mixture_name):
    if isinstance(task_or_name, DatasetProvider):
        return task_or_name
    name = str(task_or_name)
    if name in TaskRegistry._registry:
        return TaskRegistry._registry[name]
    if name in MixtureRegistry._registry:
        return MixtureRegistry._registry[name]
    _import_catalogue()
    if name in TaskRegistry._registry:
        return TaskRegistry._registry[name]
    if name in MixtureRegistry._registry:
        return MixtureRegistry._registry[name]
    raise DataError(f"mixture {mixture_name!r}: unknown task {name!r}" + _close_matches(name, TaskRegistry.names()))


# ------------------------------------------------------------------------------- registries
_catalogue_lock = threading.RLock()
_catalogue_state = {"imported": False}


def _import_catalogue():
    """Import ``t5pre.tasks`` once (its modules register tasks as a side effect).

    The flag is set *before* the import, so that a catalogue module calling ``get_task`` while
    being imported does not import the catalogue again (Python hands back the partial module).
    """
    with _catalogue_lock:
        if _catalogue_state["imported"]:
            return
        _catalogue_state["imported"] = True
        try:
            importlib.import_module("t5pre.tasks")
        except ModuleNotFoundError as e:
            if e.name != "t5pre.tasks":
                raise


class _Registry:
    """What TaskRegistry and MixtureRegistry share: one namespace (a task and a mixture never
    share a name), the catalogue imported before any lookup or registration, and errors that
    name close matches."""

    _registry: dict = {}
    kind = ""

    @classmethod
    def _other(cls) -> type:
        raise NotImplementedError

    @classmethod
    def _register(cls, name: str, item, replace: bool):
        # The catalogue first: a user entry that takes a catalogue name must fail here, clearly,
        # not later inside the catalogue's import.
        _import_catalogue()
        if not replace and (name in cls._registry or name in cls._other()._registry):
            raise DataError(f"{cls.kind} {name!r} is already registered (pass replace=True to replace it)")
        cls._registry[name] = item
        return item

    @classmethod
    def remove(cls, name: str) -> None:
        cls._registry.pop(name, None)

    @classmethod
    def get(cls, name: str):
        if name not in cls._registry:
            _import_catalogue()
        if name not in cls._registry:
            other = cls._other()
            hint = (f"; {name!r} is a {other.kind}: use get_{other.kind}"
                    if name in other._registry else "")
            raise DataError(f"unknown {cls.kind} {name!r}{hint or _close_matches(name, cls.names())}")
        return cls._registry[name]

    @classmethod
    def names(cls) -> list:
        _import_catalogue()
        return sorted(cls._registry)


class TaskRegistry(_Registry):
    """Global name -> :class:`Task` registry."""

    _registry: dict = {}
    kind = "task"

    @classmethod
    def _other(cls) -> type:
        return MixtureRegistry

    @classmethod
    def add(
        cls,
        name: str,
        source,
        preprocessors: Sequence[Callable] = (),
        output_features: Mapping[str, Feature] | None = None,
        metric_fns: Sequence[Callable] = (),
        postprocess_fn: Callable | None = None,
        replace: bool = False,
        **task_kwargs,
    ) -> Task:
        """Create and register a :class:`Task`; a taken name is an error unless ``replace``."""
        task = Task(
            name,
            source,
            preprocessors=preprocessors,
            output_features=output_features,
            metric_fns=metric_fns,
            postprocess_fn=postprocess_fn,
            **task_kwargs,
        )
        return cls.add_task(task, replace=replace)

    @classmethod
    def add_task(cls, task: Task, replace: bool = False) -> Task:
        return cls._register(task.name, task, replace)


class MixtureRegistry(_Registry):
    """Global name -> :class:`Mixture` registry."""

    _registry: dict = {}
    kind = "mixture"

    @classmethod
    def _other(cls) -> type:
        return TaskRegistry

    @classmethod
    def add(cls, name: str, tasks: Sequence, default_rate=None, replace: bool = False) -> Mixture:
        """Register a mixture of ``[(task or task name, rate), ...]``."""
        _import_catalogue()  # before Mixture(...) resolves catalogue task names
        return cls._register(name, Mixture(name, tasks, default_rate=default_rate), replace)


def get_task(name: str) -> Task:
    """The registered task ``name`` (imports the catalogue first); DataError with close matches."""
    return TaskRegistry.get(name)


def get_downstream_task(name: str) -> Task:
    """The task a command's ``--task NAME`` names: :func:`get_task` with the hints a command-line
    user needs (ConfigError when no name is given; the DataError says how to list the tasks and
    how to register one's own)."""
    if not name:
        raise ConfigError("no task given (--task NAME; `t5pre tasks list` shows them)")
    try:
        return get_task(name)
    except DataError as e:
        raise DataError(f"{e} (`t5pre tasks list` shows the registered tasks; a task that "
                        "your own code registers needs --module PYTHON_MODULE)") from None


def get_mixture(name: str) -> Mixture:
    """The registered mixture ``name`` (imports the catalogue first)."""
    return MixtureRegistry.get(name)


def get_task_or_mixture(name: str):
    """A task or a mixture by name (what a training config's ``task:`` may name)."""
    if isinstance(name, DatasetProvider):
        return name
    _import_catalogue()
    if name in TaskRegistry._registry:
        return TaskRegistry._registry[name]
    if name in MixtureRegistry._registry:
        return MixtureRegistry._registry[name]
    names = TaskRegistry.names() + MixtureRegistry.names()
    raise DataError(f"unknown task or mixture {name!r}" + _close_matches(name, names))
