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

from t5pre.errors import CheckpointError, StorageError

CHECKPOINT_SUBDIR = "checkpoints"
_NAME = "ckpt"


from t5pre.lazy import tensorflow as _tf  # noqa: E402


def _corrupt(path: str, error: BaseException) -> CheckpointError:
    """The error for a checkpoint whose files cannot be read back (a truncated or missing
    ``.data`` file: TensorFlow raises a bare IndexError, DataLossError or NotFoundError)."""
    first = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
    return CorruptCheckpoint(f"{path}: checkpoint is truncated or corrupt ({first}); delete "
                             f"{path}.* to use the previous one")


def _is_corruption(error: BaseException) -> bool:
    tf = _tf()
    if isinstance(error, (IndexError, tf.errors.DataLossError, tf.errors.NotFoundError)):
        return True
    # A zeroed or overwritten .data file: TF's crc check fails inside a generic OpError.
    text = str(error).lower()
    return any(k in text for k in ("checksum does not match", "data loss", "corrupt",
                                   "read less bytes"))


def checkpoint_dir(model_dir: str) -> str:
    return os.path.join(model_dir, CHECKPOINT_SUBDIR)


def latest_checkpoint(model_dir: str) -> str | None:
    """Path prefix of the newest checkpoint of a model directory that has its files, or None.

    The ``checkpoint`` state file decides which checkpoints are complete; when it is unreadable
    the ``ckpt-N.index`` files on disk do."""
    tf = _tf()
    steps = read_state_steps(model_dir)
    if steps is None:
        steps = steps_on_disk(model_dir)
    for step in sorted(steps, reverse=True):
        path = os.path.join(checkpoint_dir(model_dir), f"{_NAME}-{step}")
        if tf.io.gfile.exists(path + ".index"):
            return path
    return None


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
    steps = read_state_steps(model_dir)
    return sorted(steps_on_disk(model_dir) if steps is None else steps)


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

    Recovery (nothing is lost to a damaged file): :meth:`restore_latest` tries the checkpoints
    newest first and falls back past any that cannot be read (a missing ``.index``, a truncated
    or zeroed ``.data`` file), saying which and why; when the ``checkpoint`` state file itself is
    unreadable it recovers the list from the ``ckpt-N.index`` files on disk. Rotation deletes a
    checkpoint only when ``max_to_keep`` newer checkpoints that were written by this keeper or
    restored by it exist, so a good checkpoint is never dropped for a damaged newer one.
    """

    def __init__(self, model_dir: str, *, model, optimizer, is_chief: bool = True,
                 max_to_keep: int = 3, log=None):
        tf = _tf()
        self.model_dir = model_dir
        self.is_chief = is_chief
        self.max_to_keep = max_to_keep
        self._log = log or (lambda msg: None)
        with tf.init_scope():
            self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
            self.data_examples = tf.Variable(0, dtype=tf.int64, trainable=False)
            self.data_pipelines = tf.Variable(1, dtype=tf.int64, trainable=False)
        self.checkpoint = tf.train.Checkpoint(
            model=model_weights_trackable(model), optimizer=optimizer, step=self.step,
            data_examples=self.data_examples, data_pipelines=self.data_pipelines)
        # `write` (unlike `save`) does not create the save counter that `restore` expects to
        # match; creating it first puts it in every checkpoint, as CheckpointManager did.
        with tf.init_scope():
            self.checkpoint.save_counter  # noqa: B018 (creates the variable)
        self.directory = checkpoint_dir(model_dir)
        self._write_dir = self.directory if is_chief else tempfile.mkdtemp(
            prefix="t5pre-nonchief-ckpt-")
        self._kept = None  # steps in the state file, oldest first (None = not read yet)

    def latest(self) -> str | None:
        return latest_checkpoint(self.model_dir)

    def restored_position(self) -> tuple[int, int]:
        """``(data_examples, data_pipelines)`` of the checkpoint restored last."""
        return int(self.data_examples.numpy()), int(self.data_pipelines.numpy())

    def _path(self, step: int, directory: str | None = None) -> str:
        return os.path.join(directory or self.directory, f"{_NAME}-{step}")

    def _read_kept(self) -> list[int]:
        """Steps the state file lists; recovered from the files on disk when it is unreadable."""
        if self._kept is None:
            listed = read_state_steps(self.model_dir)
            if listed is None:
                on_disk = steps_on_disk(self.model_dir)
                if on_disk:
                    self._log(f"warning: {os.path.join(self.directory, 'checkpoint')} is "
                              f"unreadable; recovering from the checkpoint files on disk "
                              f"(steps {', '.join(map(str, on_disk))})")
                listed = on_disk
            self._kept = listed
        return self._kept

    def restore(self, path: str) -> int:
        """Restores everything from ``path``; returns the step. CheckpointError when the
        checkpoint does not fit the model/optimizer (e.g. another model size), CorruptCheckpoint
        when its files cannot be read."""
        tf = _tf()
        if not tf.io.gfile.exists(path + ".index"):
            raise CorruptCheckpoint(f"{path}: {os.path.basename(path)}.index is missing")
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
            raise CorruptCheckpoint(f"{path}: holds step {step}, expected {expected} (corrupt)")
        return step

    def restore_latest(self) -> tuple[int, str | None]:
        """Restores the newest checkpoint that can be read: ``(step, path)``, ``(0, None)`` for a
        directory without checkpoints. Damaged ones are skipped with a warning naming them; if
        every checkpoint is damaged, CheckpointError (never a silent restart at step 1)."""
        kept = self._read_kept()
        damaged = []
        for step in sorted(kept, reverse=True):
            path = self._path(step)
            try:
                restored = self.restore(path)
            except CorruptCheckpoint as e:
                damaged.append(step)
                self._log(f"warning: {e}; falling back to the previous checkpoint")
                continue
            if damaged:
                # Damaged checkpoints leave the list (their files stay until a save of the same
                # step replaces them), so rotation counts only checkpoints that restore.
                self._kept = [s for s in kept if s not in damaged]
                self._log(f"resuming from {path}: newer checkpoint(s) "
                          f"{', '.join(f'{_NAME}-{s}' for s in damaged)} could not be read")
            return restored, path
        if damaged:
            raise CheckpointError(
                f"{self.directory}: no checkpoint can be read (damaged: "
                f"{', '.join(f'{_NAME}-{s}' for s in damaged)}); restore them from a backup, or "
                "move the directory away to start again")
        return 0, None

    def save(self, step: int, data_examples: int, data_pipelines: int) -> str | None:
        """Writes ``ckpt-STEP`` (every worker must call this). Returns the chief's path.

        The data files are written first and the state file last (an atomic rename), so a kill
        at any moment leaves the previous state. Then checkpoints beyond ``max_to_keep`` are
        deleted, oldest first."""
        self.step.assign(step)
        self.data_examples.assign(data_examples)
        self.data_pipelines.assign(data_pipelines)
        if not self.is_chief:
            self.checkpoint.write(self._path(step, self._write_dir))
            shutil.rmtree(self._write_dir, ignore_errors=True)
            return None
        listed = self._read_kept()
        kept = [s for s in listed if s != step]
        tf = _tf()
        kept.append(step)
        drop = kept[:-self.max_to_keep] if self.max_to_keep and len(kept) > self.max_to_keep \
            else []
        kept = kept[len(drop):]
        try:
            os.makedirs(self.directory, exist_ok=True)
            path = self.checkpoint.write(self._path(step))
            _write_state(self.directory, path, [self._path(s) for s in kept])
        except (tf.errors.ResourceExhaustedError, tf.errors.PermissionDeniedError,
                tf.errors.FailedPreconditionError, tf.errors.UnknownError, OSError) as e:
            if step not in listed:  # a partial ckpt-STEP never stays behind
                _delete_checkpoint_files(self._path(step))
            raise StorageError.from_os_error(e, self.model_dir) from None
        self._kept = kept
        for old in drop:
            _delete_checkpoint_files(self._path(old))
        return path

    def remove_orphans(self) -> list[str]:
        """Deletes what killed saves leave behind (``ckpt-N_temp/``, ``checkpoint.tmp*``).
        Only call it while holding the model directory's lock."""
        removed = []
        if not self.is_chief or not os.path.isdir(self.directory):
            return removed
        for name in os.listdir(self.directory):
            full = os.path.join(self.directory, name)
            if re.fullmatch(rf"{_NAME}-\d+_temp.*", name) or name.startswith("checkpoint.tmp"):
                if os.path.isdir(full):
                    shutil.rmtree(full, ignore_errors=True)
                else:
                    try:
                        os.remove(full)
                    except OSError:
                        continue
                removed.append(name)
        return removed

    def close(self):
        if not self.is_chief:
            shutil.rmtree(self._write_dir, ignore_errors=True)


class CorruptCheckpoint(CheckpointError):
    """A checkpoint's files are missing, truncated or damaged."""


def read_state_steps(model_dir: str) -> list[int] | None:
    """Steps listed by the ``checkpoint`` state file, oldest first; [] when there is none, None
    when it exists but cannot be parsed."""
    tf = _tf()
    directory = checkpoint_dir(model_dir)
    if not tf.io.gfile.exists(os.path.join(directory, "checkpoint")):
        return []
    try:
        state = tf.train.get_checkpoint_state(directory)
    except Exception:  # a damaged text proto: google.protobuf's ParseError and kin
        return None
    if state is None:
        return None
    steps = []
    for p in state.all_model_checkpoint_paths or [state.model_checkpoint_path]:
        try:
            steps.append(checkpoint_step(p))
        except CheckpointError:
            return None
    return steps


def steps_on_disk(model_dir: str) -> list[int]:
    """Steps with a ``ckpt-N.index`` file, oldest first."""
    directory = checkpoint_dir(model_dir)
    if not os.path.isdir(directory):
        return []
    found = (re.fullmatch(rf"{_NAME}-(\d+)\.index", n) for n in os.listdir(directory))
    return sorted(int(m.group(1)) for m in found if m)


def _write_state(directory: str, latest: str, all_paths: list[str]) -> None:
    from tensorflow.python.checkpoint import checkpoint_management as cm

    cm.update_checkpoint_state_internal(
        save_dir=directory, model_checkpoint_path=latest,
        all_model_checkpoint_paths=all_paths, save_relative_paths=True)


def _delete_checkpoint_files(prefix: str) -> None:
    tf = _tf()
    for f in tf.io.gfile.glob(prefix + ".*"):
        try:
            tf.io.gfile.remove(f)
        except tf.errors.OpError:
            pass


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
