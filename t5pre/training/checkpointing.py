"""Checkpoints in ``DIR/checkpoints``: model, optimizer, step and data position, written atomically.

**Atomicity.** ``tf.train.CheckpointManager`` writes the ``ckpt-N.index``/``.data`` files first and
updates the small ``checkpoint`` state file last (an atomic rename). Readers find checkpoints
only through that state file, so a process killed while writing leaves either the previous
state (the half-written ``ckpt-N`` files are ignored and overwritten later) or the new one,
never a state pointing at a partial checkpoint (tested with SIGKILL in the middle of a save).
On restore we also check that the ``step`` stored inside ``ckpt-N`` is N.

**Multi-worker.** Under MultiWorkerMirroredStrategy every worker must run the save (it may
involve collectives), but only the chief's copy is kept: other workers write into a private
temporary directory that is deleted right after. Every worker restores from the chief's
directory, which therefore has to be on a filesystem all workers see (GCS, NFS, ...).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile

from t5pre.errors import CheckpointError

CHECKPOINT_SUBDIR = "checkpoints"
_NAME = "ckpt"


def _tf():
    import tensorflow as tf
    return tf


def _corrupt(path: str, error: BaseException) -> CheckpointError:
    """The error for a checkpoint whose files cannot be read back (a truncated or missing
    ``.data`` file: TensorFlow raises a bare IndexError, DataLossError or NotFoundError)."""
    first = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
    return CheckpointError(f"{path}: checkpoint is truncated or corrupt ({first}); delete "
                           f"{path}.* to resume from the previous one")


def _is_corruption(error: BaseException) -> bool:
    tf = _tf()
    return isinstance(error, (IndexError, tf.errors.DataLossError, tf.errors.NotFoundError))


def checkpoint_dir(model_dir: str) -> str:
    return os.path.join(model_dir, CHECKPOINT_SUBDIR)


def latest_checkpoint(model_dir: str) -> str | None:
    """Path prefix of the newest complete checkpoint of a model directory, or None."""
    return _tf().train.latest_checkpoint(checkpoint_dir(model_dir))


def checkpoint_step(path: str) -> int:
    m = re.search(rf"{_NAME}-(\d+)$", path)
    if not m:
        raise CheckpointError(f"{path}: not a t5pre checkpoint path (expected .../{_NAME}-STEP)")
    return int(m.group(1))


def find_checkpoint(model_dir: str, checkpoint=None) -> str:
    """Resolves ``checkpoint`` (None = latest, a step number, or a path) to a checkpoint prefix."""
    tf = _tf()
    if not os.path.isdir(model_dir):
        raise CheckpointError(f"{model_dir}: model directory not found")
    if checkpoint is None:
        path = latest_checkpoint(model_dir)
        if path is None:
            raise CheckpointError(
                f"{model_dir}: no checkpoint found in {checkpoint_dir(model_dir)} "
                f"(train one with `t5pre pretrain --model-dir {model_dir}`)")
        return path
    if isinstance(checkpoint, int) or str(checkpoint).isdigit():
        path = os.path.join(checkpoint_dir(model_dir), f"{_NAME}-{int(checkpoint)}")
    else:
        path = str(checkpoint)
    if not tf.io.gfile.exists(path + ".index"):
        available = all_checkpoint_steps(model_dir)
        raise CheckpointError(f"{path}: checkpoint not found (available steps: "
                              f"{', '.join(map(str, available)) or 'none'})")
    return path


def all_checkpoint_steps(model_dir: str) -> list[int]:
    state = _tf().train.get_checkpoint_state(checkpoint_dir(model_dir))
    if state is None:
        return []
    return sorted(checkpoint_step(p) for p in state.all_model_checkpoint_paths)


def model_weights_trackable(model):
    """The model's variables as a name-keyed trackable, for ``tf.train.Checkpoint``.

    We do not hand the Keras model itself to tf.train.Checkpoint: Keras 3 layers kept in Python
    lists are not reliably edges of TF's object graph (a T5's blocks were reachable only through
    the optimizer), so a model-only restore could silently skip them. Keying every variable by
    its Keras path (``encoder_block_0/attention/qkv_kernel``) makes the checkpoint independent
    of how the model tracks its sub-layers."""
    tf = _tf()
    holder = tf.Module(name="model_weights")
    weights = {}
    for i, v in enumerate(model.weights):
        key = getattr(v, "path", None) or getattr(v, "name", None) or f"variable_{i}"
        if key in weights:
            key = f"{key}_{i}"
        weights[key] = v
    holder.weights = weights
    return holder


class CheckpointKeeper:
    """Saves and restores a run's state; chief-only writes (see module docstring).

    ``state`` holds the plain (non-distributed) variables ``step``, ``data_examples`` (global
    examples consumed) and ``data_pipelines`` (input pipelines when they were consumed).
    """

    def __init__(self, model_dir: str, *, model, optimizer, is_chief: bool = True,
                 max_to_keep: int = 3):
        tf = _tf()
        self.model_dir = model_dir
        self.is_chief = is_chief
        with tf.init_scope():
            self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
            self.data_examples = tf.Variable(0, dtype=tf.int64, trainable=False)
            self.data_pipelines = tf.Variable(1, dtype=tf.int64, trainable=False)
        self.checkpoint = tf.train.Checkpoint(
            model=model_weights_trackable(model), optimizer=optimizer, step=self.step,
            data_examples=self.data_examples, data_pipelines=self.data_pipelines)
        self.directory = checkpoint_dir(model_dir)
        if is_chief:
            write_dir = self.directory
        else:
            write_dir = tempfile.mkdtemp(prefix="t5pre-nonchief-ckpt-")
        self._write_dir = write_dir
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, write_dir, max_to_keep=max_to_keep, checkpoint_name=_NAME)

    def latest(self) -> str | None:
        return latest_checkpoint(self.model_dir)

    def restore(self, path: str) -> int:
        """Restores everything from ``path``; returns the step. CheckpointError when the
        checkpoint does not fit the model/optimizer (e.g. another model size)."""
        tf = _tf()
        try:
            status = self.checkpoint.restore(path)
            status.assert_existing_objects_matched()
        except (IndexError, AssertionError, ValueError, tf.errors.OpError) as e:
            if _is_corruption(e):
                raise _corrupt(path, e) from None
            first = str(e).strip().splitlines()[0][:300]
            raise CheckpointError(
                f"{path}: checkpoint does not match this model/optimizer ({first}); was the "
                "model directory trained with another model or optimizer config?") from None
        step = int(self.step.numpy())
        expected = checkpoint_step(path)
        if step != expected:
            raise CheckpointError(f"{path}: holds step {step}, expected {expected} (corrupt?)")
        return step

    def save(self, step: int, data_examples: int, data_pipelines: int) -> str | None:
        """Writes ``ckpt-STEP`` (every worker must call this). Returns the chief's path."""
        self.step.assign(step)
        self.data_examples.assign(data_examples)
        self.data_pipelines.assign(data_pipelines)
        path = self.manager.save(checkpoint_number=step)
        if not self.is_chief:
            shutil.rmtree(self._write_dir, ignore_errors=True)
            return None
        return path

    def close(self):
        if not self.is_chief:
            shutil.rmtree(self._write_dir, ignore_errors=True)


def restore_model_weights(model, model_dir: str, checkpoint=None) -> str:
    """Loads only the model's weights from a model directory's checkpoint (for inference or
    as the starting point of fine-tuning). Returns the checkpoint path used."""
    tf = _tf()
    path = find_checkpoint(model_dir, checkpoint)
    try:
        status = tf.train.Checkpoint(model=model_weights_trackable(model)).restore(
            path).expect_partial()
        status.assert_existing_objects_matched()
    except (IndexError, AssertionError, ValueError, tf.errors.OpError) as e:
        if _is_corruption(e):
            raise _corrupt(path, e) from None
        first = str(e).strip().splitlines()[0][:300]
        raise CheckpointError(f"{path}: checkpoint does not match the model ({first})") from None
    return path
