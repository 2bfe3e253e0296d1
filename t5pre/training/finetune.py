"""Fine-tuning: H6's :class:`~t5pre.training.trainer.Trainer` started from a pretrained model,
evaluated by decoding, keeping the best checkpoint.

What this layer adds to pretraining's machinery (strategies, exact resume, TensorBoard and
checkpoints all come from the Trainer unchanged):

* **A starting point** (:func:`resolve_init`): a t5pre training model directory (its latest
  checkpoint, ``DIR@ckpt-N`` / ``DIR@N`` or ``init_checkpoint``), a ``save_pretrained`` directory
  (``model.weights.h5``) or a Hugging Face T5 directory (``config.json`` + safetensors / bin,
  converted with :func:`t5pre.models.from_hf`). The architecture is the init model's; only
  ``dropout_rate`` may change (fine-tuning default 0.1, the T5 convention; 0 in pretraining).
  Weights are loaded only when the run starts; a re-run resumes from ``OUT/checkpoints``.
* **One vocabulary.** The model's vocabulary must be the task's: token ids of another vocabulary
  would be trained on silently. A mismatch is a CheckpointError unless
  ``use_model_vocabulary`` re-tokenises the task's text with the model's vocabulary.
* **Downstream metrics while training.** Every ``training.eval_every`` steps the first
  ``finetune.eval_examples`` validation examples are decoded (greedy unless ``finetune.beam``),
  postprocessed and scored with the task's metric_fns; the scores go to TensorBoard
  (``OUT/logs/eval``) beside the token loss, and the checkpoint with the best
  ``finetune.metric`` (default: the task's main score, e.g. ROUGE-Lsum or SQuAD F1) is kept in
  ``OUT/best/`` (the ``save_pretrained`` layout plus ``best.json``), swapped in atomically.

A fine-tune config is a pretraining run config (same sections, same validation) plus a
``finetune:`` section, see :class:`FinetuneSettings` and ``configs/finetune/*.yaml``.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import os
import re
import shutil
from typing import Callable, Optional

from t5pre.errors import CheckpointError, ConfigError
from t5pre.models.store import BEST_INFO_FILE, FINETUNE_INFO_FILE, read_json_info
from t5pre.training.trainer import Trainer

BEST_DIR = "best"
DEFAULT_FINETUNE_DROPOUT = 0.1
#: Model fields a fine-tune may change: anything else would not fit the init weights.
CHANGEABLE_MODEL_FIELDS = ("dropout_rate",)

#: Defaults under a fine-tune config (a file overrides them, ``--set`` overrides the file).
FINETUNE_RUN_DEFAULTS = {
    "model": {"overrides": {"dropout_rate": DEFAULT_FINETUNE_DROPOUT}},
    "data": {"pack": False, "eval_split": "validation"},
    "training": {"eval_every": 100, "eval_steps": 4, "text_samples": 0},
}


# ------------------------------------------------------------------------------ settings
@dataclasses.dataclass
class FinetuneSettings:
    """The ``finetune:`` section of a fine-tune config."""

    metric: Optional[str] = None  # score that picks OUT/best (default: the task's main score)
    eval_examples: Optional[int] = 64  # validation examples decoded per evaluation; null = all
    eval_batch_size: int = 32
    beam: int = 1  # 1 = greedy (fast, what periodic evaluation needs)
    length_penalty: float = 0.6
    decode_length: Optional[int] = None  # null -> data.sequence_length.targets
    init_checkpoint: Optional[int] = None  # step of the init model dir (default: its latest)
    use_model_vocabulary: bool = False

    _RULES = {"eval_examples": 1, "eval_batch_size": 1, "beam": 1, "decode_length": 1,
              "init_checkpoint": 0}

    @classmethod
    def from_dict(cls, data, where: Callable[[str], str]) -> "FinetuneSettings":
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"{where('finetune')}: finetune must be a mapping, got {data!r}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        out = cls()
        for key, value in data.items():
            path = f"finetune.{key}"
            if key not in fields:
                close = difflib.get_close_matches(str(key), list(fields), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ConfigError(f"{where(path)}: unknown key {path!r}{hint}; known keys of "
                                  f"finetune: {', '.join(fields)}")
            default = getattr(cls, key)
            if value is None:
                if key in ("metric", "eval_examples", "decode_length", "init_checkpoint"):
                    setattr(out, key, None)
                    continue
                raise ConfigError(f"{where(path)}: {path} must not be null")
            if isinstance(default, bool):
                if not isinstance(value, bool):
                    raise ConfigError(f"{where(path)}: {path} must be true or false, got {value!r}")
            elif key in ("metric",):
                if not isinstance(value, str):
                    raise ConfigError(f"{where(path)}: {path} must be a string, got {value!r}")
            elif key == "length_penalty":
                if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                    raise ConfigError(f"{where(path)}: {path} must be a number >= 0, got {value!r}")
                value = float(value)
            else:
                least = cls._RULES[key]
                if isinstance(value, bool) or not isinstance(value, int) or value < least:
                    raise ConfigError(f"{where(path)}: {path} must be an integer >= {least}, "
                                      f"got {value!r}")
            setattr(out, key, value)
        return out

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def _merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in (extra or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


class _Where:
    """file:line (or the --set flag) of a dotted key, for messages."""

    def __init__(self, origin, lines, flags):
        self.origin, self.lines, self.flags = origin, lines, flags

    def __call__(self, path: str) -> str:
        if path in self.flags:
            return f"--set {self.flags[path]}"
        line = self.lines.get(path)
        return f"{self.origin}:{line}" if line else self.origin


def load_finetune_config(path: Optional[str] = None, overrides=(), *, task: Optional[str] = None,
                         steps: Optional[int] = None, model_dir: Optional[str] = None):
    """Reads a fine-tune config: ``(RunConfig, FinetuneSettings)``.

    Order: :data:`FINETUNE_RUN_DEFAULTS` < the YAML file < ``--set`` overrides < ``task`` /
    ``steps``. Every run-config key is validated by the training layer (errors name file:line
    or the flag); the ``finetune:`` section here. With ``model_dir`` holding a previous run, the
    decay horizon stays that run's (as in pretraining)."""
    from t5pre.training import config as run_config_lib

    data, lines, origin = {}, {}, "<finetune defaults>"
    if path is not None:
        data, lines = run_config_lib.read_yaml(path)
        origin = path
    data = _merge(FINETUNE_RUN_DEFAULTS, data)
    flags = {}
    items = list(overrides)
    if task:
        items.append(f"data.task={task}")
    if steps is not None:
        items.append(f"training.steps={steps}")
    for item in items:
        key, value = run_config_lib.parse_override(item)
        node = data
        parts = key.split(".")
        if not all(parts):
            raise ConfigError(f"--set {item}: bad key {key!r} (use section.key=value)")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise ConfigError(f"--set {item}: cannot set {key!r}: {part!r} is not a section")
            node = child
        node[parts[-1]] = value
        flags[key] = item
    if task:
        data["data"].pop("mixture", None)  # --task replaces whatever the file trains on
    where = _Where(origin, lines, flags)
    settings = FinetuneSettings.from_dict(data.pop("finetune", None), where)
    cfg = run_config_lib.from_dict(data, origin=origin, lines=lines, resolve_auto=False,
                                   flags=flags)
    for key in cfg.model.overrides:
        if key not in CHANGEABLE_MODEL_FIELDS:
            full = f"model.overrides.{key}"
            raise ConfigError(f"{where(full)}: {full} cannot change in fine-tuning (the "
                              f"architecture is the init model's); only "
                              f"{', '.join(CHANGEABLE_MODEL_FIELDS)} can")
    previous = None
    if model_dir is not None and os.path.isfile(os.path.join(model_dir, "config.yaml")):
        previous = run_config_lib.load_config(os.path.join(model_dir, "config.yaml"))
    return run_config_lib.resolve(cfg, previous), settings


# ------------------------------------------------------------------------------ init source
@dataclasses.dataclass
class InitSource:
    """Where fine-tuning starts: ``kind`` is ``training`` (a t5pre model dir with checkpoints),
    ``pretrained`` (``save_pretrained`` layout) or ``hf`` (a Hugging Face T5 directory)."""

    spec: str
    path: str
    kind: str
    checkpoint: Optional[int] = None  # training dirs only; None = latest

    def describe(self) -> str:
        at = f" (checkpoint {self.checkpoint})" if self.checkpoint is not None else ""
        return f"{self.kind} model {self.path}{at}"


_AT_CHECKPOINT = re.compile(r"^(?P<path>.+)@(?:ckpt-)?(?P<step>\d+)$")


def resolve_init(spec: str, checkpoint: Optional[int] = None) -> InitSource:
    """Parses ``DIR``, ``DIR@ckpt-N`` or ``DIR@N`` and tells what kind of model ``DIR`` holds."""
    from t5pre.models.io import MODEL_CONFIG_FILE, WEIGHTS_FILE
    from t5pre.training.checkpointing import checkpoint_dir

    if not spec:
        raise ConfigError("--init-from is empty")
    spec = os.fspath(spec)
    path, step = spec, None
    match = _AT_CHECKPOINT.match(spec)
    if match and not os.path.exists(spec):
        path, step = match.group("path"), int(match.group("step"))
    if checkpoint is not None:
        if step is not None and step != int(checkpoint):
            raise ConfigError(f"--init-from {spec!r} names checkpoint {step} but "
                              f"--init-checkpoint is {checkpoint}")
        step = int(checkpoint)
    if not os.path.isdir(path):
        raise CheckpointError(f"--init-from {path}: directory not found")
    has = lambda name: os.path.exists(os.path.join(path, name))  # noqa: E731
    if os.path.isfile(os.path.join(checkpoint_dir(path), "checkpoint")):
        kind = "training"
    elif has(MODEL_CONFIG_FILE) and has(WEIGHTS_FILE):
        kind = "pretrained"
    elif has("config.json") and (has("model.safetensors") or has("pytorch_model.bin")
                                 or has("model.safetensors.index.json")
                                 or has("pytorch_model.bin.index.json")):
        kind = "hf"
    elif has("config.yaml") or has("checkpoints"):
        raise CheckpointError(f"--init-from {path}: this model directory has no checkpoint yet "
                              f"(nothing in {checkpoint_dir(path)})")
    else:
        raise CheckpointError(
            f"--init-from {path}: not a model directory (expected checkpoints/ from `t5pre "
            f"pretrain`, {MODEL_CONFIG_FILE} + {WEIGHTS_FILE} from save_pretrained / `t5pre "
            "convert hf`, or a Hugging Face T5 directory with config.json and weights)")
    if step is not None and kind != "training":
        raise ConfigError(f"--init-from {spec}: a checkpoint step applies only to a training "
                          f"model directory, and {path} is a {kind} directory")
    return InitSource(spec=spec, path=path, kind=kind, checkpoint=step)


@dataclasses.dataclass
class InitModel:
    """The init model's architecture and vocabulary, and how to put its weights into a model."""

    source: InitSource
    config: object  # T5Config
    vocabulary: object
    load_into: Callable  # (model) -> description of what was loaded


def copy_weights(source_model, target_model, where: str) -> int:
    """Copies every weight of ``target_model`` from the ``source_model`` weight at the same path.

    Why not restore the checkpoint (or the .h5 file) straight into the fine-tuning model: both
    match weights by the model's object structure, and a model with dropout (fine-tuning) has
    more sub-layers than the same architecture without (pretraining), so the structures differ
    while the weights (named by path) are the same. Returns the number of arrays copied."""
    by_path = {w.path: w for w in source_model.weights}
    copied, missing = 0, []
    for weight in target_model.weights:
        src = by_path.get(weight.path)
        if src is None or tuple(src.shape) != tuple(weight.shape):
            if weight.trainable:
                missing.append(weight.path if src is None else
                               f"{weight.path} {tuple(src.shape)} vs {tuple(weight.shape)}")
            continue
        weight.assign(src.numpy() if hasattr(src, "numpy") else src.value)
        copied += 1
    if missing:
        raise CheckpointError(f"{where}: the init model does not fit the fine-tuning model "
                              f"({len(missing)} weights missing or of another shape: "
                              f"{', '.join(missing[:5])})")
    return copied


def read_init(source: InitSource) -> InitModel:
    """Reads what fine-tuning needs to know before building its model: the architecture and the
    vocabulary; the weights are read later (only when the run starts, not on resume), except
    for Hugging Face directories, where the output-head tying is only known from the tensors."""
    from t5pre.models.io import (WEIGHTS_FILE, load_pretrained, load_vocabulary_from,
                                 read_model_config)
    from t5pre.training import checkpointing

    if source.kind == "training":
        path = checkpointing.find_checkpoint(source.path, source.checkpoint)
        config = read_model_config(source.path)

        def load_into(model):
            from t5pre.models import T5Model

            twin = T5Model(config)
            checkpointing.restore_model_weights(twin, source.path, path)
            copy_weights(twin, model, path)
            return path

        return InitModel(source, config, load_vocabulary_from(source.path), load_into)
    if source.kind == "pretrained":
        def load_into(model):
            twin, _ = load_pretrained(source.path)
            copy_weights(twin, model, source.path)
            return os.path.join(source.path, WEIGHTS_FILE)

        return InitModel(source, read_model_config(source.path),
                         load_vocabulary_from(source.path), load_into)
    from t5pre.models import from_hf

    hf_model, vocabulary = from_hf(source.path)

    def load_into(model):
        copy_weights(hf_model, model, source.path)
        return f"{source.path} (Hugging Face T5, converted)"

    return InitModel(source, hf_model.config, vocabulary, load_into)


# ------------------------------------------------------------------------------ best/
class BestKeeper:
    """Keeps ``OUT/best/`` = the model with the highest ``metric`` seen so far.

    The new best is written completely into a hidden sibling directory (``save_pretrained``
    layout + ``best.json``) and then swapped in with two renames, so ``best/`` always holds one
    complete model; a crash between the renames leaves ``.best-old-*``, which the next start
    puts back. The best score survives restarts (read back from ``best/best.json``)."""

    def __init__(self, model_dir: str, metric: Optional[str], *, info: Optional[dict] = None,
                 enabled: bool = True):
        self.model_dir = model_dir
        self.path = os.path.join(model_dir, BEST_DIR)
        self.metric = metric
        self.info = dict(info or {})
        self.enabled = enabled
        self.best_score = None
        self.best_step = None
        if enabled:
            self._recover()
            stored = read_best_info(self.path)
            if stored and stored.get("metric") == metric or (stored and metric is None):
                self.metric = stored.get("metric")
                self.best_score = stored.get("score")
                self.best_step = stored.get("step")

    def _recover(self) -> None:
        if not os.path.isdir(self.model_dir):
            return
        for name in sorted(os.listdir(self.model_dir)):
            full = os.path.join(self.model_dir, name)
            if name.startswith(".best-old-"):
                if not os.path.isdir(self.path):
                    os.rename(full, self.path)
                else:
                    shutil.rmtree(full, ignore_errors=True)
            elif name.startswith(".best-new-"):
                shutil.rmtree(full, ignore_errors=True)

    def update(self, step: int, scores: dict, model, vocabulary) -> bool:
        """Saves ``model`` as the new best when its score beats the kept one; returns whether."""
        if not self.enabled or not scores:
            return False
        from t5pre.evaluation.evaluate import main_metric_name

        self.metric = main_metric_name(scores, self.metric)
        if self.metric is None:
            return False
        score = float(scores[self.metric])
        if self.best_score is not None and not score > self.best_score:
            return False
        self._write(step, score, scores, model, vocabulary)
        self.best_score, self.best_step = score, step
        return True

    def _write(self, step, score, scores, model, vocabulary) -> None:
        from t5pre.models.io import save_pretrained

        os.makedirs(self.model_dir, exist_ok=True)
        staging = os.path.join(self.model_dir, f".best-new-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        save_pretrained(model, vocabulary, staging)
        info = {**self.info, "step": int(step), "metric": self.metric, "score": score,
                "scores": scores}
        with open(os.path.join(staging, BEST_INFO_FILE), "w", encoding="utf-8") as f:
            json.dump(info, f, indent=2)
            f.write("\n")
        old = os.path.join(self.model_dir, f".best-old-{os.getpid()}")
        if os.path.isdir(self.path):
            os.rename(self.path, old)
        os.rename(staging, self.path)
        shutil.rmtree(old, ignore_errors=True)


def read_best_info(path: str) -> Optional[dict]:
    """``best.json`` of a best/ directory (None when absent or unreadable)."""
    return read_json_info(path, BEST_INFO_FILE)


# ------------------------------------------------------------------------------ trainer
class FinetuneTrainer(Trainer):
    """The Trainer with fine-tuning's starting point: the init model's weights are loaded when
    the run starts (never on resume, where the run's own checkpoint wins)."""

    def __init__(self, *args, init: Optional[InitModel] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.init = init

    def _init_from_pretrained(self) -> None:
        if self.init is None:
            self.log("no init model: training from random initialisation")
            return
        loaded = self.init.load_into(self.model)
        self.log(f"initialised weights from {loaded}")


@dataclasses.dataclass
class FinetuneResult:
    train: object  # TrainResult
    best_metric: Optional[str]
    best_score: Optional[float]
    best_step: Optional[int]
    eval_history: list  # (step, scores) of every decoded evaluation
    task: object


def _model_fn_for(model_config):
    def model_fn(run_config, vocabulary):
        from t5pre.models import T5Model

        config = model_config
        if vocabulary is not None:
            config = config.resolve_vocab_size(vocabulary)
        return T5Model(config)

    return model_fn


def _architecture(run_config, init: Optional[InitModel], model_config=None):
    """The fine-tuning model's T5Config: the init model's (or ``model_config``, or the run
    config's size) with the changeable fields of ``model.overrides`` applied."""
    from t5pre.models import T5Config

    base = init.config if init is not None else model_config
    if base is None:
        m = run_config.model
        base = T5Config.from_name(m.name)
    values = base.to_dict()
    values.update({k: v for k, v in run_config.model.overrides.items()
                   if k in CHANGEABLE_MODEL_FIELDS})
    return T5Config.from_dict(values, source="fine-tuning model")


def _record_architecture(run_config, model_config, init: Optional[InitModel]):
    """Writes the architecture into the run config (``model.name`` + full ``overrides``), so the
    model directory's config.yaml alone rebuilds the fine-tuned model."""
    from t5pre.models import available_sizes

    values = model_config.to_dict()
    name = values.pop("name", None)
    run_config.model.name = name if name in available_sizes() else "tiny"
    run_config.model.overrides = values
    run_config.model.init_from = init.source.spec if init is not None else None
    return run_config


def finetune(run_config, model_dir: str, *, init: Optional[InitSource] = None,
             settings: Optional[FinetuneSettings] = None, model_config=None, strategy=None,
             task=None, log: Optional[Callable] = None, modules=()) -> FinetuneResult:
    """Fine-tunes on ``run_config.data.task`` into ``model_dir``; see the module docstring.

    ``init`` None trains from random initialisation (the baseline of benchmarks/transfer.py),
    with the architecture of ``model_config`` (a T5Config) or of ``run_config.model.name``.
    ``modules`` (the ``--module`` values that registered the task) are recorded in
    finetune.json / best.json, so that evaluate finds the task again.
    """
    from t5pre.evaluation.evaluate import TaskEvaluator, check_vocabulary, get_downstream_task
    from t5pre.models.decode_settings import DecodeSettings
    from t5pre.training import summaries

    settings = settings or FinetuneSettings()
    log = log or summaries.console
    run_config = copy.deepcopy(run_config)
    if run_config.data.mixture and task is None:
        raise ConfigError("fine-tuning trains and evaluates one task: set data.task (--task), "
                          f"not data.mixture ({run_config.data.mixture!r})")
    task = task or get_downstream_task(run_config.data.task)
    init_model = read_init(init) if init is not None else None
    if init_model is not None:
        task = check_vocabulary(init_model.vocabulary, task, f"--init-from {init.spec}",
                                use_model_vocabulary=settings.use_model_vocabulary)
    vocabulary = (init_model.vocabulary if init_model is not None
                  and init_model.vocabulary is not None else task.vocabulary)
    if vocabulary is not task.vocabulary:
        from t5pre.evaluation.evaluate import task_with_vocabulary

        task = task_with_vocabulary(task, vocabulary)
    config = _architecture(run_config, init_model, model_config).resolve_vocab_size(vocabulary)
    _record_architecture(run_config, config, init_model)

    lengths = run_config.data.sequence_length
    sequence_length = {"inputs": lengths.inputs, "targets": lengths.targets}
    evaluator = None
    decode_every = run_config.data.eval_split and run_config.training.eval_every
    if decode_every and task.metric_fns:
        decoding = DecodeSettings(beam_size=settings.beam, length_penalty=settings.length_penalty,
                                  max_decode_length=settings.decode_length or lengths.targets,
                                  max_input_length=lengths.inputs)
        evaluator = TaskEvaluator(task, vocabulary, split=run_config.data.eval_split,
                                  sequence_length=sequence_length,
                                  max_examples=settings.eval_examples, settings=decoding,
                                  batch_size=settings.eval_batch_size, metric=settings.metric)
    info = {"task": task.name, "split": run_config.data.eval_split,
            "sequence_length": sequence_length,
            "init_from": init.spec if init is not None else None,
            "eval_examples": settings.eval_examples, "modules": list(modules)}
    eval_history = []
    trainer_holder = {}

    def eval_hook(trainer, step):
        if evaluator is None:
            return {}
        result = evaluator.evaluate(trainer.model)
        eval_history.append((step, dict(result.scores)))
        keeper = trainer_holder["keeper"]
        improved = keeper.update(step, result.scores, trainer.model, trainer.vocabulary)
        if improved:
            log(f"new best {keeper.metric} {keeper.best_score:.3f} at step {step}: saved "
                f"{keeper.path}")
        scores = {k: v for k, v in result.scores.items() if not k.endswith(("_low", "_high"))}
        scores["decode_seconds"] = result.seconds
        return scores

    trainer = FinetuneTrainer(run_config, model_dir, strategy=strategy, task=task,
                              model_fn=_model_fn_for(config), vocabulary=vocabulary,
                              eval_hook=eval_hook, log=log, init=init_model)
    keeper = BestKeeper(model_dir, settings.metric, info=info, enabled=trainer.is_chief)
    trainer_holder["keeper"] = keeper
    if trainer.is_chief:
        os.makedirs(model_dir, exist_ok=True)
        path = os.path.join(model_dir, FINETUNE_INFO_FILE)
        from t5pre.files import atomic_write_json

        atomic_write_json(path, {**info, "settings": settings.to_dict(),
                                 "init": init.describe() if init is not None else "random"})
    if init_model is not None:
        log(f"fine-tuning from {init.describe()} on task {task.name!r}")
    result = trainer.train()
    return FinetuneResult(result, keeper.metric, keeper.best_score, keeper.best_step,
                          eval_history, task)
