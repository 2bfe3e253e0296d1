"""Run configs for pretraining and fine-tuning: YAML in, a validated, resolved ``RunConfig`` out.

A run config has six sections (``model``, ``data``, ``training``, ``optimizer``, ``strategy``,
and ``finetune``, which only fine-tuning reads). Pretraining and fine-tuning share this one
schema and loader; :func:`load_finetune_config` only starts from other defaults
(:data:`FINETUNE_RUN_DEFAULTS`) and forbids architecture changes.
Every key has a default, a type and a range, declared once in the dataclasses below; loading
checks a YAML file and any ``--set a.b=value`` overrides against them and raises
:class:`~t5pre.errors.ConfigError` naming the file, the line, the dotted key and the bad value
(with a "did you mean" suggestion for misspelt keys) instead of failing later inside TensorFlow.

The *resolved* config (every default filled in, ``auto`` choices decided) is what the trainer
writes to ``DIR/config.yaml``; reading that file back gives the same run.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import importlib.resources
import os
import typing
from typing import Any, Optional

import yaml

from t5pre.data.sources import files_kind  # noqa: F401 (re-exported)
from t5pre.errors import ConfigError

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
OPTIMIZERS = ("adafactor", "adamw", "keras_adafactor")
SCHEDULES = ("auto", "rsqrt", "cosine", "constant", "linear")
# TensorFlow's tf.distribute strategies and the JAX backend's keras.distribution ones
# (t5pre/training/distribution_jax.py); a name of the other backend is refused at start-up.
TF_STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker", "tpu")
JAX_STRATEGIES = ("data_parallel", "fsdp")
STRATEGIES = TF_STRATEGIES + JAX_STRATEGIES
# training.checkpoint_format (t5pre.models.checkpoints.FORMAT_CHOICES; checked there too)
CHECKPOINT_FORMATS = ("auto", "tf", "arrays", "orbax")
# How data.files are read: plain text cut into documents (pretraining), JSON Lines, SQuAD JSON.
TEXT_FORMATS = ("lines", "paragraphs", "file")
FILE_FORMATS = TEXT_FORMATS + ("jsonl", "squad")
_JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz", ".ndjson", ".ndjson.gz")
#: The task name a files task gets when data.task does not name it, by kind.
FILES_TASK_NAMES = {"pretraining": "files_span_corruption", "seq2seq": "files_summarization",
                    "qa": "files_squad"}


#: `training.jit_compile: null` XLA-compiles the TensorFlow step of runs this long (compiling
#: costs a few seconds, saved back after a few hundred steps).
XLA_MIN_STEPS = 500


def _field(default=dataclasses.MISSING, *, doc="", choices=None, min=None, max=None,
           min_exclusive=False, factory=None):
    """A dataclass field carrying its validation rules in ``metadata``."""
    metadata = {"doc": doc, "choices": choices, "min": min, "max": max,
                "min_exclusive": min_exclusive}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass
class ModelSection:
    name: str = _field("tiny", doc="a model size from configs/model/ (tiny, small, base, ...)")
    overrides: dict = _field(factory=dict, doc="T5Config fields that replace the size's values")
    init_from: Optional[str] = _field(
        None, doc="a model directory (or save_pretrained directory) whose weights start the run")


@dataclasses.dataclass
class SequenceLength:
    inputs: int = _field(512, min=1, doc="encoder length (tokens, EOS included)")
    targets: int = _field(114, min=1, doc="decoder length (tokens, EOS included)")


@dataclasses.dataclass
class DataSection:
    task: Optional[str] = _field(None, doc="a registered task name (or set `mixture`)")
    mixture: Optional[str] = _field(None, doc="a registered mixture name (or set `task`)")
    files: Any = _field(
        None, doc="train on your own files instead of a registered task: a glob or a list of "
                  "globs (the train split), or {split: glob or [globs]}, e.g. {train: "
                  "'corpus/*.txt', validation: 'heldout.txt'}; `.gz` files are read as gzip. "
                  "Relative paths are from the working directory and recorded absolute. "
                  "pretrain: span corruption over the text; finetune: input_field -> "
                  "target_field (ROUGE) or format squad (SQuAD EM/F1). data.task, if set, "
                  "names the task (default: files_span_corruption, files_summarization or "
                  "files_squad)")
    format: Optional[str] = _field(
        None, choices=FILE_FORMATS,
        doc="how data.files are read: lines (one document per non-blank line), paragraphs "
            "(documents separated by blank lines, hard-wrapped lines joined with a space), "
            "file (one document per file), jsonl (JSON Lines: text_field, or input_field and "
            "target_field), squad (SQuAD v1.1 JSON, fine-tuning); null: jsonl for "
            ".jsonl/.json/.ndjson files or when input_field is set, else lines")
    text_field: str = _field("text", doc="jsonl pretraining: the field holding the text "
                                         "(nested as a.b)")
    input_field: Optional[str] = _field(None, doc="jsonl fine-tuning: the field holding the "
                                                  "input text (e.g. document)")
    target_field: Optional[str] = _field(None, doc="jsonl fine-tuning: the field holding the "
                                                   "target text (e.g. summary)")
    prefix: str = _field("", doc="jsonl fine-tuning: text put before every input, e.g. "
                                 "'summarize: '")
    vocabulary: Optional[str] = _field(
        None, doc="data.files: the SentencePiece model (`t5pre vocab train`) or model directory "
                  "whose vocabulary tokenizes them; null: the shipped one in pretraining, the "
                  "init model's in fine-tuning")
    modules: list = _field(
        factory=list, doc="Python modules imported before the task is looked up (they may "
                          "register it); `--module` adds to them and the run records them")

    def files_spec(self) -> Optional[dict]:
        """The ``data.files`` keys that rebuild the run's files task (fine-tuning records them
        for evaluate; :func:`t5pre.tasks.files.files_task` reads them), or None when the run
        trains on a registered task."""
        if not self.files:
            return None
        return {"task": self.task, "files": copy.deepcopy(self.files), "format": self.format,
                "text_field": self.text_field, "input_field": self.input_field,
                "target_field": self.target_field, "prefix": self.prefix,
                "vocabulary": self.vocabulary}
    sequence_length: SequenceLength = _field(factory=SequenceLength)
    pack: bool = _field(False, doc="pack several examples into each row (T5 pretraining: true)")
    shuffle: bool = _field(True)
    seed: Optional[int] = _field(None, doc="data seed; null -> training.seed")
    train_split: str = _field("train")
    eval_split: Optional[str] = _field("validation", doc="null disables periodic evaluation")
    cache_dir: Optional[str] = _field(None, doc="a `t5pre data cache` directory of the task (for "
                                      "the splits it holds); null: the task's implicit cache "
                                      "under $T5PRE_CACHE_DIR, built once. Resume is O(1) and "
                                      "exact either way")


@dataclasses.dataclass
class TrainingSection:
    batch_size: int = _field(128, min=1, doc="GLOBAL batch (examples per step, all replicas)")
    steps: int = _field(10000, min=0, doc="total optimizer steps of the run")
    seed: int = _field(0, doc="model initialisation and data seed")
    grad_accum_steps: int = _field(1, min=1, doc="micro-batches per step (memory, not maths)")
    clip_norm: Optional[float] = _field(1.0, min=0.0, min_exclusive=True,
                                        doc="global-norm gradient clipping; null disables")
    z_loss: float = _field(1e-4, min=0.0)
    precision: str = _field("float32", choices=PRECISIONS)
    log_every: int = _field(50, min=1)
    eval_every: int = _field(0, min=0, doc="0 disables periodic evaluation")
    eval_steps: int = _field(10, min=1)
    checkpoint_every: int = _field(1000, min=1)
    keep_checkpoints: int = _field(3, min=1)
    checkpoint_format: str = _field(
        "auto", choices=CHECKPOINT_FORMATS,
        doc="auto: tf on TensorFlow; on JAX the format of the directory's checkpoints (a run "
            "keeps its format), else orbax (per-process, asynchronous saves). arrays: numpy "
            "files gathered to process 0 (JAX)")
    nonfinite_skip_limit: int = _field(10, min=0,
                                       doc="consecutive NaN/Inf steps skipped before stopping")
    deterministic: bool = _field(False, doc="tf.config.experimental.enable_op_determinism")
    peak_flops: Optional[float] = _field(None, min=0.0, min_exclusive=True,
                                         doc="peak FLOP/s of ONE replica; enables the MFU scalar")
    text_samples: int = _field(3, min=0, doc="decoded examples written to TensorBoard per eval")
    jit_compile: Optional[bool] = _field(
        None, doc="XLA-compile the TensorFlow train step; null (default): on for runs of at "
                  f"least {XLA_MIN_STEPS} steps on one replica (measured 6-14% faster per step "
                  "on CPU, but compiling costs seconds: benchmarks.md), off otherwise (several "
                  "replicas; TPU compiles by itself); the JAX step is always jitted")
    profile_steps: Optional[str] = _field(
        None, doc="'START:END': a profiler trace of those steps in DIR/logs/train")
    allow_data_change: bool = _field(
        False, doc="resume although task, lengths, batch size, packing or data seed changed")


@dataclasses.dataclass
class OptimizerSection:
    name: str = _field("adafactor", choices=OPTIMIZERS)
    schedule: str = _field("auto", choices=SCHEDULES,
                           doc="auto: rsqrt for (keras_)adafactor, cosine for adamw")
    learning_rate: Optional[float] = _field(
        None, min=0.0, min_exclusive=True,
        doc="rsqrt: the scale (lr = scale/sqrt(max(step, warmup)), default 1.0); "
            "cosine/linear/constant: the peak lr (default 1e-3 adamw, 1e-3 adafactor)")
    warmup_steps: int = _field(10000, min=0)
    decay_steps: Optional[int] = _field(
        None, min=1, doc="cosine/linear: last step of the decay; null -> training.steps (so "
                         "a larger --steps on a resume stretches the decay to the new end; "
                         "set it to the old end to keep the old schedule)")
    final_learning_rate: float = _field(1e-5, min=0.0)
    weight_decay: float = _field(0.0, min=0.0)
    beta_1: float = _field(0.9, min=0.0, max=1.0)
    beta_2: float = _field(0.999, min=0.0, max=1.0)
    epsilon: float = _field(1e-8, min=0.0, min_exclusive=True)
    decay_rate: float = _field(0.8, min=0.0, doc="adafactor: second-moment decay exponent")
    clipping_threshold: float = _field(1.0, min=0.0, min_exclusive=True,
                                       doc="adafactor: update clipping (RMS)")
    momentum: Optional[float] = _field(None, min=0.0, max=1.0,
                                       doc="adafactor: first-moment decay (t5x beta1); null: none")


@dataclasses.dataclass
class StrategySection:
    name: str = _field("auto", choices=STRATEGIES)
    tpu: Optional[str] = _field(None, doc="TPU name or grpc:// address (tpu strategy)")
    cluster: str = _field("tf_config", choices=("tf_config", "slurm"),
                          doc="where multi_worker finds its workers: TF_CONFIG, or the srun step")
    port_base: int = _field(8888, min=1, max=65535, doc="slurm: first worker port on each node")


def profile_range(value: Optional[str]) -> Optional[tuple[int, int]]:
    """``"START:END"`` -> (START, END) with 1 <= START <= END; ConfigError naming the field."""
    if value in (None, ""):
        return None
    parts = str(value).split(":")
    try:
        start, end = (int(p) for p in parts)
    except ValueError:
        start = end = 0
    if len(parts) != 2 or not 1 <= start <= end:
        raise ConfigError(f"training.profile_steps = {value!r}: expected START:END with "
                          "1 <= START <= END, e.g. 10:15")
    return start, end


# What decides the data stream a checkpoint's data position counts into.
DATA_STREAM_FIELDS = ("data.task", "data.mixture", "data.files", "data.format",
                      "data.text_field", "data.input_field", "data.target_field", "data.prefix",
                      "data.sequence_length.inputs",
                      "data.sequence_length.targets", "data.pack", "data.shuffle",
                      "data.train_split", "training.batch_size", "data_seed")


def data_stream_changes(old: "RunConfig", new: "RunConfig") -> list[tuple[str, object, object]]:
    """``(field, old, new)`` for each field of DATA_STREAM_FIELDS that differs."""
    def get(config, path):
        value = config
        for part in path.split("."):
            value = getattr(value, part)
        return value

    return [(f, get(old, f), get(new, f)) for f in DATA_STREAM_FIELDS
            if get(old, f) != get(new, f)]


@dataclasses.dataclass
class FinetuneSection:
    """What fine-tuning adds: decoded evaluation and the best checkpoint (ignored by pretrain)."""

    metric: Optional[str] = _field(None, doc="score that picks DIR/best (default: the task's "
                                   "main score, e.g. rougeLsum or f1)")
    eval_examples: Optional[int] = _field(64, min=1, doc="validation examples decoded per "
                                          "evaluation; null = all")
    eval_batch_size: int = _field(32, min=1)
    beam: int = _field(1, min=1, doc="beam size of the periodic decode (1 = greedy)")
    length_penalty: float = _field(0.6, min=0.0)
    decode_length: Optional[int] = _field(None, min=1,
                                          doc="null -> data.sequence_length.targets")
    use_model_vocabulary: bool = _field(False, doc="re-tokenise the task's text with the init "
                                        "model's vocabulary when it differs from the task's")

    def decode_settings(self, sequence_length: "SequenceLength"):
        """The periodic evaluation's decoding, as the one decode-settings type."""
        from t5pre.models.decode_settings import DecodeSettings

        return DecodeSettings(beam_size=self.beam, length_penalty=self.length_penalty,
                              max_decode_length=self.decode_length or sequence_length.targets,
                              max_input_length=sequence_length.inputs)


@dataclasses.dataclass
class RunConfig:
    model: ModelSection = _field(factory=ModelSection)
    data: DataSection = _field(factory=DataSection)
    training: TrainingSection = _field(factory=TrainingSection)
    optimizer: OptimizerSection = _field(factory=OptimizerSection)
    strategy: StrategySection = _field(factory=StrategySection)
    finetune: FinetuneSection = _field(factory=FinetuneSection)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=False)

    def replace(self, path: str, value) -> "RunConfig":
        """A copy with one dotted key changed (validated like an override)."""
        return from_dict(_set_path(self.to_dict(), path, value, origin="replace"), origin="replace")

    @property
    def data_seed(self) -> int:
        return self.training.seed if self.data.seed is None else self.data.seed

    @property
    def task_name(self) -> str:
        return self.data.task or self.data.mixture


# --------------------------------------------------------------------------------------------
# Validation


class _Where:
    """Where a value came from, for messages: a file (with line numbers per key) or a flag."""

    def __init__(self, origin: str, lines: dict | None = None, flags: dict | None = None):
        self.origin = origin
        self.lines = lines or {}
        self.flags = flags or {}

    def __call__(self, path: str) -> str:
        if path in self.flags:
            return _flag_label(self.flags[path])
        # An unknown section (``--set nosuch.key=1`` fails at ``nosuch``) or a bad key inside a
        # mapping-valued flag (``--set data.sequence_length={inputz: 8}``) came from that flag.
        for key, flag in self.flags.items():
            if key.startswith(path + ".") or path.startswith(key + "."):
                return _flag_label(flag)
        line = self.lines.get(path)
        return f"{self.origin}:{line}" if line else self.origin


def _type_name(tp) -> str:
    return {int: "an integer", float: "a number", bool: "true/false", str: "a string",
            dict: "a mapping", list: "a list"}.get(tp, getattr(tp, "__name__", str(tp)))


def _check_value(value, tp, meta, path, where):
    if tp is Any:  # checked by the section's own rules (data.files: _check_files)
        return value
    optional = False
    if typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional, tp = True, args[0]
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{where(path)}: {path} must be {_type_name(tp)}, got null")
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where(path)}: {path} must be true or false, got {value!r}")
    elif tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise ConfigError(f"{where(path)}: {path} must be an integer, got {value!r}")
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            # YAML 1.1 reads "1e-4" (no dot) as a string; accept it if it is a number.
            number = None
            if isinstance(value, str):
                try:
                    number = float(value)
                except ValueError:
                    pass
            if number is None:
                raise ConfigError(f"{where(path)}: {path} must be a number, got {value!r}")
            value = number
        value = float(value)
    elif tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where(path)}: {path} must be a string, got {value!r}")
    elif tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where(path)}: {path} must be a mapping, got {value!r}")
    elif tp is list:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ConfigError(f"{where(path)}: {path} must be a list of names, got {value!r}")
    choices = meta.get("choices")
    if choices and value not in choices:
        hint = _suggest(str(value), choices)
        raise ConfigError(f"{where(path)}: {path} = {value!r} is not one of "
                          f"{', '.join(choices)}{hint}")
    lo, hi = meta.get("min"), meta.get("max")
    if lo is not None and (value < lo or (meta.get("min_exclusive") and value == lo)):
        op = ">" if meta.get("min_exclusive") else ">="
        raise ConfigError(f"{where(path)}: {path} = {value!r} is out of range (must be {op} {lo})")
    if hi is not None and value > hi:
        raise ConfigError(f"{where(path)}: {path} = {value!r} is out of range (must be <= {hi})")
    return value


def _suggest(name: str, candidates) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


#: Keys that existed once, with what replaces them.
REMOVED_KEYS = {
    "finetune.init_checkpoint": "name the checkpoint in the init source instead: "
                                "--init-from DIR@ckpt-N (model.init_from: DIR@ckpt-N)",
}


def _build(cls, data, path: str, where: _Where):
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where(path)}: {path or 'the config'} must be a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key in data:
        if key not in fields:
            full = f"{path}.{key}" if path else str(key)
            if full in REMOVED_KEYS:
                raise ConfigError(f"{where(full)}: {full} is no longer a config key: "
                                  f"{REMOVED_KEYS[full]}")
            raise ConfigError(f"{where(full)}: unknown key {full!r}{_suggest(str(key), fields)}"
                              f"; known keys{' of ' + path if path else ''}: "
                              f"{', '.join(fields)}")
    kwargs = {}
    for name, f in fields.items():
        full = f"{path}.{name}" if path else name
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, data.get(name), full, where)
        elif name in data:
            kwargs[name] = _check_value(data[name], tp, f.metadata, full, where)
    return cls(**kwargs)


def _absolute(pattern: str) -> str:
    """A local path or glob made absolute (recorded so that a resume from elsewhere finds it);
    URLs (gs://...) unchanged."""
    if "://" in pattern:
        return pattern
    return os.path.abspath(os.path.expanduser(pattern))


def _files_by_split(value, where: _Where) -> dict:
    """``data.files`` as ``{split: [absolute patterns]}``; ConfigError naming the key."""
    path = "data.files"
    if isinstance(value, (str, list)):
        value = {"train": value}
    if not isinstance(value, dict) or not value:
        raise ConfigError(f"{where(path)}: {path} must be a glob, a list of globs or "
                          f"{{split: glob or [globs]}}, got {value!r}")
    out = {}
    for split, patterns in value.items():
        key = f"{path}.{split}"
        if isinstance(patterns, str):
            patterns = [patterns]
        if (not isinstance(split, str) or not split or not isinstance(patterns, list)
                or not patterns or not all(isinstance(p, str) and p.strip() for p in patterns)):
            raise ConfigError(f"{where(key)}: {key} must be a glob or a non-empty list of "
                              f"globs, got {patterns!r}")
        out[split] = [_absolute(p.strip()) for p in patterns]
    return out


def _check_files(cfg: RunConfig, where: _Where) -> None:
    """Validates and normalises the ``data.files`` keys (see DataSection) in place: files as
    ``{split: [absolute globs]}``, the format decided, the task named."""
    d = cfg.data
    file_keys = {"format": d.format, "input_field": d.input_field,
                 "target_field": d.target_field, "vocabulary": d.vocabulary}
    if not d.files:
        given = [k for k, v in file_keys.items() if v is not None]
        if d.prefix:
            given.append("prefix")
        if given:
            raise ConfigError(f"{where('data.' + given[0])}: data.{given[0]} applies to "
                              "data.files (--files / --train-files), which is not set")
        return
    d.files = _files_by_split(d.files, where)
    if d.mixture:
        raise ConfigError(f"{where('data.mixture')}: data.files and data.mixture exclude each "
                          "other (the files make one task)")
    if bool(d.input_field) != bool(d.target_field):
        missing = "target_field" if d.input_field else "input_field"
        raise ConfigError(f"{where('data.' + missing)}: data.{missing} is not set: fine-tuning "
                          "on JSON Lines needs both data.input_field and data.target_field")
    if d.format is None:
        patterns = [p for ps in d.files.values() for p in ps]
        jsonl = [p.lower().endswith(_JSONL_SUFFIXES) for p in patterns]
        if d.input_field or all(jsonl):
            d.format = "jsonl"
        elif not any(jsonl):
            d.format = "lines"
        else:
            raise ConfigError(f"{where('data.files')}: data.files mix JSON Lines (.jsonl/.json) "
                              "and plain text; set data.format (--format) explicitly")
    if d.input_field and d.format != "jsonl":
        raise ConfigError(f"{where('data.input_field')}: data.input_field / target_field read "
                          f"JSON Lines, but data.format is {d.format!r}")
    if d.vocabulary is not None:
        d.vocabulary = _absolute(d.vocabulary)
    if not d.task:
        d.task = FILES_TASK_NAMES[files_kind(d)]


def _check_cross_fields(cfg: RunConfig, where: _Where) -> None:
    d = cfg.data
    _check_files(cfg, where)
    if bool(d.task) == bool(d.mixture):
        raise ConfigError(f"{where('data')}: set exactly one of data.task or data.mixture "
                          f"(got task={d.task!r}, mixture={d.mixture!r})")
    t = cfg.training
    if t.batch_size % t.grad_accum_steps:
        raise ConfigError(f"{where('training.grad_accum_steps')}: training.batch_size "
                          f"({t.batch_size}) must be divisible by training.grad_accum_steps "
                          f"({t.grad_accum_steps})")
    o = cfg.optimizer
    if o.schedule in ("cosine", "linear") and o.decay_steps is not None \
            and o.decay_steps < o.warmup_steps:
        raise ConfigError(f"{where('optimizer.decay_steps')}: optimizer.decay_steps "
                          f"({o.decay_steps}) must be >= optimizer.warmup_steps "
                          f"({o.warmup_steps})")
    if cfg.strategy.name == "tpu" and not cfg.strategy.tpu and not os.environ.get("TPU_NAME"):
        # Colab/Cloud TPU VMs resolve an empty name themselves; we only note the choice.
        pass
    _check_model_overrides(cfg, where)


def _check_model_overrides(cfg: RunConfig, where: _Where) -> None:
    """Model override keys must be T5Config fields (checked when the model package exists)."""
    try:
        from t5pre.models.config import T5Config
    except ImportError:  # the model layer is not importable: the model build will check
        return
    if not dataclasses.is_dataclass(T5Config):
        return
    names = [f.name for f in dataclasses.fields(T5Config)]
    for key in cfg.model.overrides:
        if key not in names:
            full = f"model.overrides.{key}"
            raise ConfigError(f"{where(full)}: unknown model field {full!r}"
                              f"{_suggest(str(key), names)}")


def resolve(cfg: RunConfig, previous: RunConfig | None = None, log=None) -> RunConfig:
    """Fill in the ``auto``/``null`` choices that depend on other keys.

    ``previous`` is the resolved config of the run found in the model directory. A cosine or
    linear decay whose end was derived from ``training.steps`` (``optimizer.decay_steps:
    null``) follows the new ``training.steps``: ``--steps 400`` on a finished 200-step run
    stretches the decay to step 400 instead of training 200 more steps at the final rate, and
    ``log`` (e.g. ``print``) gets one line saying so and which key keeps the old end. A
    ``decay_steps`` the previous run set explicitly is kept unless the new config sets one.
    Unchanged steps give the same schedule (an exact resume)."""
    o = cfg.optimizer
    old_end = None
    if (previous is not None and o.decay_steps is None
            and previous.optimizer.decay_steps is not None):
        p = previous.optimizer
        if _derived_decay(previous):
            old_end = p.decay_steps
        else:
            o.decay_steps = p.decay_steps
            if log is not None and cfg.training.steps > max(p.decay_steps,
                                                             previous.training.steps):
                log(f"note: optimizer.decay_steps = {p.decay_steps} (set by the run in this "
                    f"directory): the learning rate stays at its final value from step "
                    f"{p.decay_steps} to {cfg.training.steps}; set optimizer.decay_steps="
                    f"{cfg.training.steps} to decay until the end")
    if o.schedule == "auto":
        o.schedule = "rsqrt" if o.name in ("adafactor", "keras_adafactor") else "cosine"
    if o.learning_rate is None:
        o.learning_rate = 1.0 if o.schedule == "rsqrt" else 1e-3
    if o.schedule in ("cosine", "linear") and o.decay_steps is None:
        o.decay_steps = max(cfg.training.steps, o.warmup_steps, 1)
        if log is not None and old_end is not None and o.decay_steps != old_end:
            log(f"note: the {o.schedule} learning-rate decay now ends at step {o.decay_steps} "
                f"(training.steps; it ended at step {old_end} in the run in this directory); "
                f"--set optimizer.decay_steps={old_end} keeps the old schedule")
    if cfg.data.seed is None:
        cfg.data.seed = cfg.training.seed
    return cfg


def from_dict(data: dict, origin: str = "<config>", lines: dict | None = None,
              resolve_auto: bool = True, flags: dict | None = None,
              finetune: bool = False) -> RunConfig:
    where = _Where(origin, lines, flags)
    cfg = _build(RunConfig, data, "", where)
    _check_cross_fields(cfg, where)
    if finetune:
        _check_finetune_model(cfg, where)
    return resolve(cfg) if resolve_auto else cfg


def _check_finetune_model(cfg: RunConfig, where: _Where) -> None:
    for key in cfg.model.overrides:
        if key not in CHANGEABLE_MODEL_FIELDS:
            full = f"model.overrides.{key}"
            raise ConfigError(f"{where(full)}: {full} cannot change in fine-tuning (the "
                              f"architecture is the init model's); only "
                              f"{', '.join(CHANGEABLE_MODEL_FIELDS)} can")


# --------------------------------------------------------------------------------------------
# YAML files and overrides


def _key_lines(text: str) -> dict:
    """Maps dotted key paths to their 1-based line in the YAML text (for error messages)."""
    lines = {}
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return lines

    def walk(node, prefix):
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                path = f"{prefix}.{k.value}" if prefix else str(k.value)
                lines[path] = k.start_mark.line + 1
                walk(v, path)

    walk(root, "")
    return lines


def read_yaml(path: str) -> tuple[dict, dict]:
    """Reads a YAML mapping; returns (data, key_lines). Syntax errors name file and line."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f"{path}:{mark.line + 1}" if mark else path
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{at}: invalid YAML: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a run config must be a YAML mapping of sections, "
                          f"got {type(data).__name__}")
    return data, _key_lines(text)


def _set_path(data: dict, path: str, value, origin: str) -> dict:
    keys = path.split(".")
    if not all(keys):
        raise ConfigError(f"{origin}: bad key {path!r} (use section.key=value)")
    node = data
    for k in keys[:-1]:
        child = node.get(k)
        if child is None:
            child = node[k] = {}
        elif not isinstance(child, dict):
            raise ConfigError(f"{origin}: cannot set {path!r}: {k!r} is not a section")
        node = child
    node[keys[-1]] = value
    return data


class FlagOverride(str):
    """An override (``"training.steps=-5"``) given by a dedicated flag (``--steps -5``): a
    message about its value names the flag as the user typed it, not ``--set``."""

    def __new__(cls, item: str, flag: str):
        obj = super().__new__(cls, item)
        obj.flag = flag
        return obj


def _flag_label(item) -> str:
    return getattr(item, "flag", None) or f"--set {item}"


def parse_override(text: str) -> tuple[str, Any]:
    """``"a.b=value"`` -> ``("a.b", yaml-parsed value)``."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. training.steps=100")
    key, raw = text.split("=", 1)
    key = key.strip()
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key, value


def packaged_config_path(name: str = "default") -> str:
    """Path of ``configs/pretrain/NAME.yaml`` as installed (package ``t5pre.configs``)."""
    ref = importlib.resources.files("t5pre.configs").joinpath("pretrain", f"{name}.yaml")
    if not ref.is_file():
        raise ConfigError(f"no packaged pretrain config named {name!r}")
    return str(ref)


def load_config(path: str | None = None, overrides=(), *, defaults: dict | None = None,
                resolve_auto: bool = True, model_dir: str | None = None,
                finetune: bool = False, log=print) -> RunConfig:
    """Loads a run config: ``defaults`` < YAML file < ``overrides`` (``"a.b=v"`` strings).

    With ``model_dir`` holding a previous run's ``config.yaml``, a continued run's schedule
    is resolved against it (see :func:`resolve`; its notes go to ``log``).
    Raises ConfigError naming the file and line (or the ``--set`` flag) of a bad key or value.
    """
    data: dict = {}
    lines: dict = {}
    origin = "<defaults>"
    if defaults:
        data = _deep_merge({}, defaults)
    if path is not None:
        file_data, lines = read_yaml(path)
        data = _deep_merge(data, file_data)
        origin = path
    flags = {}
    for item in overrides:
        key, value = parse_override(item)
        _set_path(data, key, value, origin=_flag_label(item))
        flags[key] = item
    # An error in an overridden key names the flag, one in the file names file:line.
    cfg = from_dict(data, origin=origin, lines=lines, resolve_auto=False, flags=flags,
                    finetune=finetune)
    if not resolve_auto:
        return cfg
    previous = None
    if model_dir is not None:
        from t5pre.models.layout import RUN_CONFIG_FILE

        stored = os.path.join(model_dir, RUN_CONFIG_FILE)
        if os.path.isfile(stored):
            previous = load_config(stored)
            if (path is not None and os.path.abspath(path) == os.path.abspath(stored)
                    and "optimizer.decay_steps" not in flags and _derived_decay(previous)):
                # A re-run from the saved config: its decay_steps is the one resolve derived
                # from training.steps, not a choice; derive it again from the new steps.
                cfg.optimizer.decay_steps = None
    return resolve(cfg, previous, log=log)


def _derived_decay(cfg: RunConfig) -> bool:
    """Whether a resolved config's decay end is the one derived from training.steps."""
    o = cfg.optimizer
    return (o.schedule in ("cosine", "linear") and o.decay_steps is not None
            and o.decay_steps == max(cfg.training.steps, o.warmup_steps, 1))


DEFAULT_FINETUNE_DROPOUT = 0.1
#: Model fields a fine-tune may change: anything else would not fit the init weights.
CHANGEABLE_MODEL_FIELDS = ("dropout_rate",)

#: Defaults under a fine-tune config (a file overrides them, ``--set`` overrides the file).
FINETUNE_RUN_DEFAULTS = {
    "model": {"overrides": {"dropout_rate": DEFAULT_FINETUNE_DROPOUT}},
    "data": {"pack": False, "eval_split": "validation"},
    "training": {"eval_every": 100, "eval_steps": 4, "text_samples": 0},
}


def load_finetune_config(path: str | None = None, overrides=(), *, task: str | None = None,
                         steps: int | None = None, model_dir: str | None = None,
                         defaults: dict | None = None) -> RunConfig:
    """A fine-tune run config: :func:`load_config` over :data:`FINETUNE_RUN_DEFAULTS`.

    ``task`` / ``steps`` (the CLI's ``--task`` / ``--steps``) come last; ``--task`` replaces
    whatever the file trains on. ``defaults`` (a recorded run's config, for a re-run) replaces
    the fine-tuning defaults. ``model.overrides`` may only change
    :data:`CHANGEABLE_MODEL_FIELDS` (the architecture is the init model's)."""
    items = list(overrides)
    if task:
        items += [f"data.task={task}", "data.mixture=null"]
    if steps is not None:
        items.append(FlagOverride(f"training.steps={steps}", f"--steps {steps}"))
    return load_config(path, items, defaults=defaults or FINETUNE_RUN_DEFAULTS,
                       model_dir=model_dir, finetune=True)


def _deep_merge(base: dict, extra: dict) -> dict:
    """A new nested dict: ``extra`` over ``base``; neither input is modified or shared."""
    base, extra = copy.deepcopy(base), copy.deepcopy(extra)
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def save_config(cfg: RunConfig, path: str) -> None:
    """Writes the resolved config atomically (temp file + rename)."""
    from t5pre.files import atomic_write_text

    atomic_write_text(path, "# Resolved run config written by t5pre (every default filled in).\n"
                      + cfg.to_yaml())
