"""The model directory's reader: what a model directory holds, reading a model back for
inference (`load_model(path, checkpoint=None)`) and the weights a run starts from
(`resolve_init` / `read_init`).

Three on-disk layouts hold a model, and every inference command (predict, evaluate, export)
accepts all of them:

* a **training model directory** (`config.yaml`, `model_config.json`, `spiece.model`,
  `checkpoints/`, and `finetune.json` after `t5pre finetune`): the latest or a chosen
  checkpoint; its run config gives the sequence lengths it was trained at;
* a **pretrained directory** written by `save_pretrained` / `t5pre convert hf`
  (`model_config.json`, `model.weights.h5`, `spiece.model`): no checkpoints, no run config;
* a fine-tuning run's **`best/`**: a pretrained directory plus `best.json` (task, sequence
  lengths, step and scores of the kept checkpoint).

The vocabulary (`spiece.model`) is required: without it no text can be encoded, so its absence is
a `CheckpointError` here rather than a crash later.

Checkpoints (both formats, rotation, fallback) are `t5pre.models.checkpoints`, in this layer; the
model files (`model_config.json`, vocabulary, `write_model_files`) are `t5pre.models.io`; the
file names are `t5pre.models.layout`. `config.yaml` is read here as plain YAML
(`RecordedConfig`): the run-config schema is the training layer's, above this one.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Callable, Optional

from t5pre.errors import CheckpointError, ConfigError
# The names of the model directory (kept importable from here) and its model files.
from t5pre.models.io import model_config_values, write_model_files  # noqa: F401
from t5pre.models.layout import (  # noqa: F401
    BEST_INFO_FILE, CHECKPOINT_STATE_FILE, CHECKPOINTS_DIR, FINETUNE_INFO_FILE, FORMAT_VERSION,
    MODEL_CONFIG_FILE, RUN_CONFIG_FILE, VOCABULARY_FILE, WEIGHTS_FILE)

TRAINING, PRETRAINED = "training", "pretrained"


@dataclasses.dataclass
class LoadedModel:
    """A model ready for inference and what its directory says about it."""

    model: object
    vocabulary: object
    run_config: object  # None for a pretrained directory
    model_dir: str
    checkpoint: Optional[str]  # checkpoint path, or None for model.weights.h5
    layout: str  # TRAINING or PRETRAINED
    info: Optional[dict] = None  # best.json / finetune.json of a fine-tuned directory

    @property
    def task(self) -> Optional[str]:
        """The task the model was fine-tuned (or trained) on, when the directory says."""
        if self.info and self.info.get("task"):
            return self.info["task"]
        return self.run_config.data.task if self.run_config is not None else None

    @property
    def sequence_length(self) -> Optional[dict]:
        """`{"inputs": N, "targets": M}` the model was trained at, when the directory says."""
        lengths = (self.info or {}).get("sequence_length")
        if lengths and lengths.get("inputs") and lengths.get("targets"):
            return {"inputs": int(lengths["inputs"]), "targets": int(lengths["targets"])}
        if self.run_config is not None:
            lengths = self.run_config.data.sequence_length
            return {"inputs": int(lengths.inputs), "targets": int(lengths.targets)}
        return None

    @property
    def modules(self) -> list:
        """Python modules that registered the model's task (`--module` at fine-tuning)."""
        return list((self.info or {}).get("modules") or [])


def is_training_dir(path: str) -> bool:
    return (os.path.isfile(os.path.join(path, RUN_CONFIG_FILE))
            or os.path.isdir(os.path.join(path, CHECKPOINTS_DIR)))


def has_checkpoints(path: str) -> bool:
    return os.path.isfile(os.path.join(path, CHECKPOINTS_DIR, CHECKPOINT_STATE_FILE))


def has_weights_file(path: str) -> bool:
    return os.path.isfile(os.path.join(path, WEIGHTS_FILE))


def read_json_info(path: str, name: str) -> Optional[dict]:
    """`path/name` as a dict (None when absent or unreadable)."""
    try:
        with open(os.path.join(path, name), encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_run_info(path: str) -> Optional[dict]:
    """What fine-tuning recorded in `path`: `best.json` (a best/ dir) or `finetune.json`."""
    return read_json_info(path, BEST_INFO_FILE) or read_json_info(path, FINETUNE_INFO_FILE)


class RecordedConfig:
    """A recorded ``config.yaml`` (or one of its sections) read as plain YAML: its keys as
    attributes (``run_config.data.sequence_length.inputs``; sections are RecordedConfig too) and
    ``to_dict()``. The model layer reads what it needs of a run (task, sequence lengths) this
    way; the validated ``RunConfig`` is ``t5pre.training.config.load_config(DIR/config.yaml)``."""

    def __init__(self, values: dict, where: str):
        self._values, self._where = values, where

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            value = self._values[name]
        except KeyError:
            raise AttributeError(f"{self._where}: no field {name!r}") from None
        return RecordedConfig(value, f"{self._where}.{name}") if isinstance(value, dict) else value

    def to_dict(self) -> dict:
        import copy

        return copy.deepcopy(self._values)

    def __repr__(self) -> str:
        return f"RecordedConfig({self._where}: {self._values!r})"


def load_run_config(model_dir: str) -> RecordedConfig:
    """``DIR/config.yaml`` (the resolved run config a training directory records), as a
    :class:`RecordedConfig`; CheckpointError when it is missing, unreadable or lacks the
    sequence lengths."""
    import yaml

    path = os.path.join(model_dir, RUN_CONFIG_FILE)
    if not os.path.isfile(path):
        raise CheckpointError(f"{model_dir}: {RUN_CONFIG_FILE} is missing (not a t5pre model "
                              "directory)")
    try:
        with open(path, encoding="utf-8") as f:
            values = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as e:
        raise CheckpointError(f"{path}: cannot read the run config ({e})") from None
    lengths = (values.get("data") or {}).get("sequence_length") if isinstance(values, dict) else None
    if not (isinstance(lengths, dict) and isinstance(lengths.get("inputs"), int)
            and isinstance(lengths.get("targets"), int)):
        raise CheckpointError(f"{path}: data.sequence_length.inputs / .targets missing (not a "
                              "run config t5pre wrote)")
    return RecordedConfig(values, path)


def load_training_dir(model_dir, checkpoint=None):
    """`(model, vocabulary, run_config, checkpoint_path)` from a training model directory.

    `checkpoint`: None for the latest, a step number, or a checkpoint path prefix. Only the
    model weights are read (optimizer state is ignored). Raises CheckpointError for a missing
    directory, missing files or a directory without checkpoints.
    """
    from t5pre.models.io import load_vocabulary_from, read_model_config
    from t5pre.models.t5 import T5Model
    from t5pre.models import checkpoints

    model_dir = os.fspath(model_dir)
    if not os.path.isdir(model_dir):
        raise CheckpointError(f"{model_dir}: model directory not found")
    path = checkpoints.find_checkpoint(model_dir, checkpoint)
    run_config = load_run_config(model_dir)
    model_config = read_model_config(model_dir)
    vocabulary = load_vocabulary_from(model_dir)
    if vocabulary is not None and model_config.vocab_size < vocabulary.vocab_size:
        raise CheckpointError(f"{model_dir}: the vocabulary has {vocabulary.vocab_size} ids but "
                              f"the model has {model_config.vocab_size} embedding rows")
    model = T5Model(model_config)
    model(_dummy_features(run_config), training=False)
    checkpoints.restore_model_weights(model, model_dir, path)
    return model, vocabulary, run_config, path


def _dummy_features(run_config) -> dict:
    """A one-example batch of at most 8 tokens that builds the model's weights."""
    import numpy as np

    n, m = run_config.data.sequence_length.inputs, run_config.data.sequence_length.targets
    n, m = min(n, 8), min(m, 8)
    ones = lambda k: np.ones((1, k), "int32")  # noqa: E731
    return {"encoder_token_ids": ones(n), "encoder_padding_mask": ones(n),
            "decoder_token_ids": ones(m), "decoder_padding_mask": ones(m)}


def _uses_checkpoints(model_dir: str, checkpoint) -> bool:
    """A training directory is read from its checkpoints unless it has none and a
    `model.weights.h5` (a directory that `save_pretrained` also wrote into)."""
    return is_training_dir(model_dir) and (
        checkpoint is not None or has_checkpoints(model_dir) or not has_weights_file(model_dir))


def load_for_inference(model_dir, checkpoint=None) -> LoadedModel:
    """Load any of the layouts of the module docstring, with what the directory records.

    `checkpoint` (a step number or checkpoint path) only applies to training directories.
    """
    model_dir = os.fspath(model_dir)
    if not os.path.isdir(model_dir):
        raise CheckpointError(f"{model_dir}: model directory not found")
    if _uses_checkpoints(model_dir, checkpoint):
        if not os.path.isfile(os.path.join(model_dir, RUN_CONFIG_FILE)):
            raise CheckpointError(f"{model_dir}: config.yaml is missing (not a complete t5pre "
                                  "model directory)")
        model, vocabulary, run_config, path = load_training_dir(model_dir, checkpoint)
        layout = TRAINING
    elif has_weights_file(model_dir):
        if checkpoint is not None:
            raise CheckpointError(
                f"{model_dir}: --checkpoint {checkpoint} given, but this is a pretrained "
                "directory (model.weights.h5, no checkpoints/)")
        from t5pre.models.io import load_pretrained

        model, vocabulary = load_pretrained(model_dir)
        run_config, path, layout = None, None, PRETRAINED
    else:
        raise CheckpointError(
            f"{model_dir}: not a t5pre model directory (it has neither checkpoints/ with "
            "config.yaml nor model.weights.h5 with model_config.json)")
    if vocabulary is None:
        raise CheckpointError(
            f"{model_dir}: spiece.model is missing; text generation needs the model's vocabulary")
    return LoadedModel(model, vocabulary, run_config, model_dir, path, layout,
                       read_run_info(model_dir))


def load_model(path, checkpoint=None):
    """`(model, vocabulary, run_config or None)` from any layout (see `load_for_inference`)."""
    loaded = load_for_inference(path, checkpoint)
    return loaded.model, loaded.vocabulary, loaded.run_config


# ------------------------------------------------------------------------------ init sources
# Where a run's weights start (`model.init_from`, `t5pre finetune --init-from`): every layout of
# the module docstring, plus a Hugging Face T5 directory. One reader for pretraining's and
# fine-tuning's starting point.
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


def resolve_init(spec: str, *, where: str = "--init-from") -> InitSource:
    """Parses ``DIR``, ``DIR@ckpt-N`` or ``DIR@N`` and tells what kind of model ``DIR`` holds.

    ``DIR@ckpt-N`` is the one way to name a checkpoint of a training directory (``where`` names
    the flag or config key in messages)."""
    from t5pre.models.checkpoints import checkpoint_dir

    if not spec:
        raise ConfigError(f"{where} is empty")
    spec = os.fspath(spec)
    path, step = spec, None
    match = _AT_CHECKPOINT.match(spec)
    if match and not os.path.exists(spec):
        path, step = match.group("path"), int(match.group("step"))
    if not os.path.isdir(path):
        raise CheckpointError(f"{where} {path}: directory not found")
    has = lambda name: os.path.exists(os.path.join(path, name))  # noqa: E731
    if os.path.isfile(os.path.join(checkpoint_dir(path), CHECKPOINT_STATE_FILE)):
        kind = "training"
    elif has(MODEL_CONFIG_FILE) and has(WEIGHTS_FILE):
        kind = "pretrained"
    elif has("config.json") and (has("model.safetensors") or has("pytorch_model.bin")
                                 or has("model.safetensors.index.json")
                                 or has("pytorch_model.bin.index.json")):
        kind = "hf"
    elif has(RUN_CONFIG_FILE) or has(CHECKPOINTS_DIR):
        raise CheckpointError(f"{where} {path}: this model directory has no checkpoint yet "
                              f"(nothing in {checkpoint_dir(path)})")
    else:
        raise CheckpointError(
            f"{where} {path}: not a model directory (expected checkpoints/ from `t5pre "
            f"pretrain`, {MODEL_CONFIG_FILE} + {WEIGHTS_FILE} from save_pretrained / `t5pre "
            "convert hf`, or a Hugging Face T5 directory with config.json and weights)")
    if step is not None and kind != "training":
        raise ConfigError(f"{where} {spec}: a checkpoint step applies only to a training "
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

    Why not restore the checkpoint (or the .h5 file) straight into the model being trained: both
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
        vocab = [getattr(getattr(m, "config", None), "vocab_size", None)
                 for m in (source_model, target_model)]
        if None not in vocab and vocab[0] != vocab[1]:
            raise CheckpointError(
                f"{where}: the init model has another vocabulary ({vocab[0]} embedding rows, "
                f"the model being trained {vocab[1]}): initialise from a model trained with "
                "this run's vocabulary, or train on a task that uses the init model's")
        raise CheckpointError(f"{where}: the init model does not fit the model being trained "
                              f"({len(missing)} weights missing or of another shape: "
                              f"{', '.join(missing[:5])})")
    return copied


def read_init(source: InitSource) -> InitModel:
    """Reads what fine-tuning needs to know before building its model: the architecture and the
    vocabulary; the weights are read later (only when the run starts, not on resume), except
    for Hugging Face directories, where the output-head tying is only known from the tensors."""
    from t5pre.models.io import load_pretrained, load_vocabulary_from, read_model_config
    from t5pre.models import checkpoints

    if source.kind == "training":
        path = checkpoints.find_checkpoint(source.path, source.checkpoint)
        config = read_model_config(source.path)

        def load_into(model):
            from t5pre.models import T5Model

            twin = T5Model(config)
            checkpoints.restore_model_weights(twin, source.path, path)
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
