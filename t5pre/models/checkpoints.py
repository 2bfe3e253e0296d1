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

**Formats.** ``format="tf"`` (the TensorFlow backend): ``ckpt-N.index`` + ``ckpt-N.data-*``
written by ``tf.train.Checkpoint``. ``format="arrays"`` (the JAX backend; no TensorFlow
involved): a directory ``ckpt-N/`` holding one ``.npy`` file per variable and ``manifest.json``
(for each variable: its key -- ``model/<Keras path>`` or ``optimizer/<Keras path>`` -- file,
shape, dtype and sha256; and ``step``, ``data_examples``, ``data_pipelines``). It is written into
``ckpt-N_temp-*/`` and renamed into place, then the state file is updated, so the atomicity
argument above holds for it too. Both formats share the state file (``checkpoints/checkpoint``,
the same text format TensorFlow writes), rotation, fallback past damaged checkpoints and the
removal of orphans; :func:`latest_checkpoint`, :func:`find_checkpoint` and
:func:`restore_model_weights` read either, so a directory trained on JAX exports on TensorFlow
(model weights are matched by Keras path, the same on both backends).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile

from t5pre.errors import CheckpointError, StorageError
from t5pre.files import atomic_directory, atomic_write_json, atomic_write_text
from t5pre.models.layout import CHECKPOINT_STATE_FILE, CHECKPOINTS_DIR

CHECKPOINT_SUBDIR = CHECKPOINTS_DIR
_NAME = "ckpt"
FORMATS = ("tf", "arrays")
MANIFEST = "manifest.json"
ARRAYS_FORMAT_VERSION = 1


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


def is_arrays_checkpoint(path: str) -> bool:
    return os.path.isfile(os.path.join(path, MANIFEST))


def checkpoint_exists(path: str) -> bool:
    """Whether ``path`` (``.../ckpt-N``) has its files, in either format."""
    if is_arrays_checkpoint(path):
        return True
    if os.path.exists(path + ".index"):
        return True
    if "://" in path:  # gs://..., only TensorFlow's file system reads it
        return _tf().io.gfile.exists(path + ".index")
    return False


def latest_checkpoint(model_dir: str) -> str | None:
    """Path prefix of the newest checkpoint of a model directory that has its files, or None.

    The ``checkpoint`` state file decides which checkpoints are complete; when it is unreadable
    the ``ckpt-N.index`` files (or ``ckpt-N/manifest.json``) on disk do."""
    steps = read_state_steps(model_dir)
    if steps is None:
        steps = steps_on_disk(model_dir)
    for step in sorted(steps, reverse=True):
        path = os.path.join(checkpoint_dir(model_dir), f"{_NAME}-{step}")
        if checkpoint_exists(path):
            return path
    return None


def checkpoint_step(path: str) -> int:
    m = re.search(rf"{_NAME}-(\d+)$", path)
    if not m:
        raise CheckpointError(f"{path}: not a t5pre checkpoint path (expected .../{_NAME}-STEP)")
    return int(m.group(1))


def find_checkpoint(model_dir: str, checkpoint=None) -> str:
    """Resolves ``checkpoint`` (None = latest, a step number, or a path) to a checkpoint prefix."""
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
        path = str(checkpoint).rstrip("/")
    if not checkpoint_exists(path):
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


class _TFStore:
    """``tf.train.Checkpoint`` files ``ckpt-N.index`` / ``ckpt-N.data-*``."""

    def __init__(self, model, optimizer):
        tf = _tf()
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

    def position(self) -> tuple[int, int, int]:
        return (int(self.step.numpy()), int(self.data_examples.numpy()),
                int(self.data_pipelines.numpy()))

    def read(self, path: str) -> None:
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

    def write(self, path: str, step: int, data_examples: int, data_pipelines: int) -> str:
        self.step.assign(step)
        self.data_examples.assign(data_examples)
        self.data_pipelines.assign(data_pipelines)
        return self.checkpoint.write(path)

    def storage_errors(self) -> tuple:
        tf = _tf()
        return (tf.errors.ResourceExhaustedError, tf.errors.PermissionDeniedError,
                tf.errors.FailedPreconditionError, tf.errors.UnknownError, OSError)

    @staticmethod
    def delete(path: str) -> None:
        _delete_checkpoint_files(path)


def _variable_key(v, i: int) -> str:
    return getattr(v, "path", None) or getattr(v, "name", None) or f"variable_{i}"


def keyed_variables(model, optimizer=None) -> dict:
    """``{"model/<path>": variable, "optimizer/<path>": variable}`` (duplicates get ``_i``, as
    in :func:`model_weights_trackable`)."""
    out = {}
    for prefix, variables in (("model", model.weights),
                              ("optimizer", optimizer.variables if optimizer is not None else [])):
        for i, v in enumerate(variables):
            key = _variable_key(v, i)
            if f"{prefix}/{key}" in out:
                key = f"{key}_{i}"
            out[f"{prefix}/{key}"] = v
    return out


def _to_numpy(value):
    """A variable's value as a host numpy array (gathers an array sharded over processes)."""
    import numpy as np

    value = getattr(value, "value", value)
    if getattr(value, "is_fully_addressable", True) is False:
        from jax.experimental import multihost_utils

        value = multihost_utils.process_allgather(value, tiled=True)
    if hasattr(value, "numpy") and not isinstance(value, np.ndarray):
        try:
            return np.asarray(value.numpy())
        except (AttributeError, TypeError):
            pass
    return np.asarray(value)


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class _HashingWriter:
    """A write-only file that hashes what goes through it (no second read of the file)."""

    def __init__(self, f):
        self.f, self.sha256 = f, hashlib.sha256()

    def write(self, data):
        self.sha256.update(data)
        return self.f.write(data)


def _save_array(path: str, array) -> tuple[str, str]:
    """Writes ``array`` as .npy; returns the dtype name to record (bfloat16 goes as uint16) and
    the file's sha256."""
    import numpy as np

    dtype = str(array.dtype)
    if dtype == "bfloat16":
        array = array.view(np.uint16)
    with open(path, "wb") as f:
        writer = _HashingWriter(f)
        np.lib.format.write_array(writer, np.require(array, requirements="C"), allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())
    return dtype, writer.sha256.hexdigest()


def _load_array(path: str, dtype: str):
    import numpy as np

    array = np.load(path, allow_pickle=False)
    if dtype == "bfloat16":
        import ml_dtypes

        array = array.view(ml_dtypes.bfloat16)
    return array


def read_manifest(path: str) -> dict:
    """The manifest of an arrays checkpoint (CorruptCheckpoint when missing or unreadable)."""
    file = os.path.join(path, MANIFEST)
    try:
        with open(file, encoding="utf-8") as f:
            manifest = json.load(f)
        if not isinstance(manifest, dict) or not isinstance(manifest.get("arrays"), dict):
            raise ValueError("no 'arrays' table")
    except FileNotFoundError:
        raise CorruptCheckpoint(f"{path}: {MANIFEST} is missing") from None
    except (OSError, ValueError) as e:
        raise CorruptCheckpoint(f"{path}: {MANIFEST} is unreadable ({e}); delete {path} to "
                                "use the previous checkpoint") from None
    return manifest


def load_arrays(path: str, keys=None, *, verify: bool = True) -> dict:
    """``{key: numpy array}`` of an arrays checkpoint (only ``keys`` when given), each checked
    against the manifest's shape, dtype and sha256 (CorruptCheckpoint on any difference)."""
    manifest = read_manifest(path)
    out = {}
    for key, entry in manifest["arrays"].items():
        if keys is not None and key not in keys:
            continue
        file = os.path.join(path, entry["file"])
        try:
            if verify and _sha256(file) != entry["sha256"]:
                raise CorruptCheckpoint(f"{path}: {entry['file']} ({key}) fails its sha256 "
                                        f"check (truncated or damaged); delete {path} to use "
                                        "the previous checkpoint")
            array = _load_array(file, entry["dtype"])
        except CorruptCheckpoint:
            raise
        except (OSError, ValueError) as e:
            raise CorruptCheckpoint(f"{path}: {entry['file']} ({key}) cannot be read "
                                    f"({e}); delete {path} to use the previous checkpoint") \
                from None
        if list(array.shape) != list(entry["shape"]):
            raise CorruptCheckpoint(f"{path}: {key} has shape {list(array.shape)}, the manifest "
                                    f"says {entry['shape']} (corrupt)")
        out[key] = array
    return out


def _assign_arrays(path: str, variables: dict, arrays: dict, what: str) -> None:
    """Assigns ``arrays`` into ``variables`` (both keyed alike); CheckpointError naming the
    first difference when the checkpoint holds another model/optimizer."""
    missing = [k for k in variables if k not in arrays]
    if missing:
        raise CheckpointError(
            f"{path}: checkpoint does not match this {what} (no value for "
            f"{', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}); was the model "
            "directory trained with another model or optimizer config?")
    for key, v in variables.items():
        a = arrays[key]
        if tuple(a.shape) != tuple(v.shape):
            raise CheckpointError(
                f"{path}: checkpoint does not match this {what} ({key} has shape "
                f"{tuple(a.shape)} there, {tuple(v.shape)} here)")
    for key, v in variables.items():
        v.assign(arrays[key].astype(v.dtype) if str(arrays[key].dtype) != str(v.dtype)
                 else arrays[key])


class _ArrayStore:
    """``ckpt-N/`` directories of .npy files + manifest.json (see the module docstring)."""

    def __init__(self, model, optimizer):
        self.model, self.optimizer = model, optimizer
        self._position = (0, 0, 1)

    def position(self) -> tuple[int, int, int]:
        return self._position

    def read(self, path: str) -> None:
        variables = keyed_variables(self.model, self.optimizer)
        manifest = read_manifest(path)
        listed = manifest["arrays"]
        extra = [k for k in listed if k not in variables]
        missing = [k for k in variables if k not in listed]
        if extra or missing:
            diff = (missing or extra)[:3]
            raise CheckpointError(
                f"{path}: checkpoint does not match this model/optimizer ("
                f"{'missing' if missing else 'unexpected'}: {', '.join(diff)}); was the model "
                "directory trained with another model or optimizer config?")
        arrays = load_arrays(path)
        _assign_arrays(path, variables, arrays, "model/optimizer")
        try:
            self._position = (int(manifest["step"]), int(manifest["data_examples"]),
                              int(manifest["data_pipelines"]))
        except (KeyError, TypeError, ValueError):
            raise CorruptCheckpoint(f"{path}: {MANIFEST} lacks step/data position") from None

    def write(self, path: str, step: int, data_examples: int, data_pipelines: int,
              *, keep: bool = True) -> str:
        """Gathers every value (all processes must call), then writes ``path`` if ``keep``."""
        arrays = {k: _to_numpy(v) for k, v in keyed_variables(self.model,
                                                             self.optimizer).items()}
        self._position = (step, data_examples, data_pipelines)
        if not keep:
            return path
        # built in ckpt-N_temp-*/ (remove_orphans deletes what a kill leaves); a damaged
        # checkpoint of the same step is replaced
        with atomic_directory(path, replace=True) as temp:
            entries = {}
            for i, (key, array) in enumerate(arrays.items()):
                file = f"{i:05d}.npy"
                dtype, digest = _save_array(os.path.join(temp, file), array)
                entries[key] = {"file": file, "shape": list(array.shape), "dtype": dtype,
                                "sha256": digest}
            manifest = {"format": "t5pre-arrays", "format_version": ARRAYS_FORMAT_VERSION,
                        "step": int(step), "data_examples": int(data_examples),
                        "data_pipelines": int(data_pipelines), "arrays": entries}
            atomic_write_json(os.path.join(temp, MANIFEST), manifest, indent=1)
        return path

    def storage_errors(self) -> tuple:
        return (OSError,)

    @staticmethod
    def delete(path: str) -> None:
        shutil.rmtree(path, ignore_errors=True)


class CheckpointKeeper:
    """Saves and restores a run's state; chief-only writes (see module docstring).

    The state holds the model and optimizer variables, ``step``, ``data_examples`` (global
    examples consumed) and ``data_pipelines`` (input pipelines when they were consumed);
    :meth:`restored_position` gives the last two as ints after a restore. ``format`` is ``"tf"``
    (``tf.train.Checkpoint``) or ``"arrays"`` (numpy files, the JAX backend's); everything
    below is shared by both.

    Recovery (nothing is lost to a damaged file): :meth:`restore_latest` tries the checkpoints
    newest first and falls back past any that cannot be read (a missing ``.index`` or manifest,
    a truncated or zeroed ``.data`` or ``.npy`` file), saying which and why; when the
    ``checkpoint`` state file itself is unreadable it recovers the list from the checkpoints on
    disk. Rotation deletes a checkpoint only when ``max_to_keep`` newer checkpoints that were
    written by this keeper or restored by it exist, so a good checkpoint is never dropped for a
    damaged newer one.
    """

    def __init__(self, model_dir: str, *, model, optimizer, is_chief: bool = True,
                 max_to_keep: int = 3, log=None, format: str = "tf"):
        if format not in FORMATS:
            raise ValueError(f"checkpoint format {format!r}: use one of {', '.join(FORMATS)}")
        self.model_dir = model_dir
        self.is_chief = is_chief
        self.max_to_keep = max_to_keep
        self.format = format
        self._log = log or (lambda msg: None)
        self._store = _TFStore(model, optimizer) if format == "tf" else _ArrayStore(model,
                                                                                     optimizer)
        if format == "tf":  # the TF objects, as before (callers read keeper.step etc.)
            self.checkpoint = self._store.checkpoint
            self.step = self._store.step
            self.data_examples = self._store.data_examples
            self.data_pipelines = self._store.data_pipelines
        self.directory = checkpoint_dir(model_dir)
        self._write_dir = self.directory if is_chief or format == "arrays" else \
            tempfile.mkdtemp(prefix="t5pre-nonchief-ckpt-")
        self._kept = None  # steps in the state file, oldest first (None = not read yet)

    def latest(self) -> str | None:
        return latest_checkpoint(self.model_dir)

    def restored_position(self) -> tuple[int, int]:
        """``(data_examples, data_pipelines)`` of the last restore or save."""
        _, examples, pipelines = self._store.position()
        return examples, pipelines

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
        if self.format == "arrays" and not is_arrays_checkpoint(path):
            if os.path.exists(path + ".index"):
                raise CheckpointError(
                    f"{path}: a TensorFlow checkpoint; this run (JAX backend) resumes only "
                    "its own format. Resume it on the TensorFlow backend, or start a new "
                    "--model-dir with model.init_from set to this directory")
            raise CorruptCheckpoint(f"{path}: {MANIFEST} is missing")
        if self.format == "tf" and is_arrays_checkpoint(path):
            raise CheckpointError(
                f"{path}: a JAX-backend (arrays) checkpoint; resume it with KERAS_BACKEND=jax, "
                "or start a new --model-dir with model.init_from set to this directory")
        self._store.read(path)
        step = self._store.position()[0]
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
        store = self._store
        if not self.is_chief:
            if self.format == "arrays":  # takes part in gathering sharded values, writes nothing
                store.write(self._path(step), step, data_examples, data_pipelines, keep=False)
            else:
                store.write(self._path(step, self._write_dir), step, data_examples,
                            data_pipelines)
                shutil.rmtree(self._write_dir, ignore_errors=True)
            return None
        listed = self._read_kept()
        kept = [s for s in listed if s != step]
        kept.append(step)
        drop = kept[:-self.max_to_keep] if self.max_to_keep and len(kept) > self.max_to_keep \
            else []
        kept = kept[len(drop):]
        try:
            os.makedirs(self.directory, exist_ok=True)
            path = store.write(self._path(step), step, data_examples, data_pipelines)
            _write_state(self.directory, path, [self._path(s) for s in kept])
        except store.storage_errors() as e:
            if step not in listed:  # a partial ckpt-STEP never stays behind
                store.delete(self._path(step))
            raise StorageError.from_os_error(e, self.model_dir) from None
        self._kept = kept
        for old in drop:
            store.delete(self._path(old))
        return path

    def remove_orphans(self) -> list[str]:
        """Deletes what killed saves leave behind (``ckpt-N_temp*``, ``ckpt-N_old-*`` of a
        replaced damaged checkpoint, ``checkpoint.tmp*``).
        Only call it while holding the model directory's lock."""
        removed = []
        if not self.is_chief or not os.path.isdir(self.directory):
            return removed
        for name in os.listdir(self.directory):
            full = os.path.join(self.directory, name)
            if (re.fullmatch(rf"{_NAME}-\d+_(temp|old-).*", name)
                    or name.startswith(CHECKPOINT_STATE_FILE + ".tmp")):
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
        if not self.is_chief and self.format == "tf":
            shutil.rmtree(self._write_dir, ignore_errors=True)


class CorruptCheckpoint(CheckpointError):
    """A checkpoint's files are missing, truncated or damaged."""


_STATE_LINE = re.compile(r'\s*(\w+)\s*:\s*(?:"((?:[^"\\]|\\.)*)"|([-+0-9.eE]+))\s*')
_STATE_KEYS = ("model_checkpoint_path", "all_model_checkpoint_paths",
               "all_model_checkpoint_timestamps", "last_preserved_timestamp")


def _parse_state(text: str):
    """``(latest, all_paths)`` of a ``checkpoint`` state file (TensorFlow's text format), or
    None when it cannot be parsed."""
    latest, paths = None, []
    for line in text.splitlines():
        if not line.strip():
            continue
        m = _STATE_LINE.fullmatch(line)
        if not m or m.group(1) not in _STATE_KEYS:
            return None
        key, value = m.group(1), m.group(2)
        if key == "model_checkpoint_path":
            latest = value
        elif key == "all_model_checkpoint_paths":
            paths.append(value)
    if not latest:
        return None
    return latest, paths


def read_state_steps(model_dir: str) -> list[int] | None:
    """Steps listed by the ``checkpoint`` state file, oldest first; [] when there is none, None
    when it exists but cannot be parsed."""
    directory = checkpoint_dir(model_dir)
    file = os.path.join(directory, "checkpoint")
    try:
        if "://" in file:
            tf = _tf()
            if not tf.io.gfile.exists(file):
                return []
            with tf.io.gfile.GFile(file, "r") as f:
                text = f.read()
        else:
            with open(file, encoding="utf-8") as f:
                text = f.read()
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError):
        return None
    parsed = _parse_state(text)
    if parsed is None:
        return None
    latest, paths = parsed
    steps = []
    for p in paths or [latest]:
        try:
            steps.append(checkpoint_step(p))
        except CheckpointError:
            return None
    return steps


def steps_on_disk(model_dir: str) -> list[int]:
    """Steps with a ``ckpt-N.index`` file or a ``ckpt-N/manifest.json``, oldest first."""
    directory = checkpoint_dir(model_dir)
    if not os.path.isdir(directory):
        return []
    steps = set()
    for n in os.listdir(directory):
        m = re.fullmatch(rf"{_NAME}-(\d+)\.index", n)
        if m:
            steps.add(int(m.group(1)))
            continue
        m = re.fullmatch(rf"{_NAME}-(\d+)", n)
        if m and is_arrays_checkpoint(os.path.join(directory, n)):
            steps.add(int(m.group(1)))
    return sorted(steps)


def _write_state(directory: str, latest: str, all_paths: list[str]) -> None:
    """Writes the ``checkpoint`` state file (TensorFlow's text format, relative paths) through a
    temporary file and an atomic rename."""
    def rel(p):
        return os.path.relpath(p, directory) if os.path.isabs(p) or os.path.dirname(p) else p

    def quoted(p):
        return '"' + rel(p).replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = [f"model_checkpoint_path: {quoted(latest)}"]
    lines += [f"all_model_checkpoint_paths: {quoted(p)}" for p in all_paths]
    text = "\n".join(lines) + "\n"
    if "://" in directory:
        from tensorflow.python.checkpoint import checkpoint_management as cm

        cm.update_checkpoint_state_internal(
            save_dir=directory, model_checkpoint_path=latest,
            all_model_checkpoint_paths=all_paths, save_relative_paths=True)
        return
    atomic_write_text(os.path.join(directory, CHECKPOINT_STATE_FILE), text)


def _delete_checkpoint_files(prefix: str) -> None:
    tf = _tf()
    for f in tf.io.gfile.glob(prefix + ".*"):
        try:
            tf.io.gfile.remove(f)
        except tf.errors.OpError:
            pass


_TF_MODEL_KEY = re.compile(r"^model/weights/(?P<name>.+)/\.ATTRIBUTES/VARIABLE_VALUE$")


def _unescape_tf_name(name: str) -> str:
    """Undoes TensorFlow's object-graph escaping of a child name (``.`` -> ``..``,
    ``/`` -> ``.S``), giving back the Keras path a variable was keyed by."""
    out, i = [], 0
    while i < len(name):
        if name[i] == "." and i + 1 < len(name) and name[i + 1] in ".S":
            out.append("." if name[i + 1] == "." else "/")
            i += 2
        else:
            out.append(name[i])
            i += 1
    return "".join(out)


def _tf_reader(path: str):
    """A ``tf.train.CheckpointReader`` of a TensorFlow checkpoint: it reads tensors by name
    without building any TensorFlow object, so it works the same under every Keras backend."""
    try:
        tf = _tf()
    except ImportError:
        raise CheckpointError(
            f"{path}: a TensorFlow-format checkpoint, and TensorFlow is not installed here; "
            "install it (pip install tensorflow), or on a host with TensorFlow export the "
            "weights first (`t5pre export --format hf`) and start from that directory") from None
    if not tf.io.gfile.exists(path + ".index"):
        raise CorruptCheckpoint(f"{path}: {os.path.basename(path)}.index is missing")
    try:
        return tf.train.load_checkpoint(path)
    except (IndexError, ValueError, tf.errors.OpError) as e:
        raise _corrupt(path, e) from None


def read_model_arrays(path: str, keys=None) -> dict:
    """``{Keras path: numpy array}`` of the model weights held by the checkpoint ``path``, in
    either format (only ``keys`` when given).

    The one reader of a checkpoint's model weights: every backend reads every format through
    it and assigns the arrays by Keras path, so a directory trained on TensorFlow gives the
    same tensors on JAX and the other way round. (Restoring a TensorFlow checkpoint through
    ``tf.train.Checkpoint`` on the JAX backend matched no variable -- Keras' JAX variables are
    not TensorFlow trackables -- and silently kept the initial values.)"""
    if is_arrays_checkpoint(path):
        wanted = None if keys is None else {f"model/{k}" for k in keys}
        arrays = load_arrays(path, keys=wanted)
        return {k[len("model/"):]: a for k, a in arrays.items() if k.startswith("model/")}
    reader = _tf_reader(path)
    tf = _tf()
    # The object graph is the last record of the .data file: reading it checks that the file is
    # whole (a truncated checkpoint is damaged even when the model's tensors survived), and the
    # step that it is the checkpoint its name says.
    try:
        reader.get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH")
        step = int(reader.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE"))
    except (IndexError, ValueError, tf.errors.OpError) as e:
        raise _corrupt(path, e) from None
    if step != checkpoint_step(path):
        raise CorruptCheckpoint(f"{path}: holds step {step}, expected {checkpoint_step(path)} "
                                "(corrupt)")
    out = {}
    for name in reader.get_variable_to_shape_map():
        match = _TF_MODEL_KEY.match(name)
        if not match:
            continue
        key = _unescape_tf_name(match.group("name"))
        if keys is not None and key not in keys:
            continue
        try:
            out[key] = _as_numpy_dtype(reader.get_tensor(name))
        except (IndexError, ValueError, tf.errors.OpError) as e:
            raise _corrupt(path, e) from None
    return out


def _as_numpy_dtype(array):
    """TensorFlow's reader returns bfloat16 in its own numpy dtype; ml_dtypes' is the one JAX
    and the arrays format use."""
    import numpy as np

    array = np.asarray(array)
    if str(array.dtype) == "bfloat16" and type(array.dtype).__module__ != "ml_dtypes":
        import ml_dtypes

        array = array.view(np.uint16).view(ml_dtypes.bfloat16)
    return array


def restore_model_weights(model, model_dir: str, checkpoint=None) -> str:
    """Loads only the model's weights from a model directory's checkpoint (for inference or
    as the starting point of fine-tuning), in either format and on either backend, through
    :func:`read_model_arrays`. Every weight of ``model`` must be in the checkpoint with its
    shape: a missing one is a CheckpointError naming it, never a silently kept initial value.
    Returns the checkpoint path used."""
    path = find_checkpoint(model_dir, checkpoint)
    variables = {k[len("model/"):]: v for k, v in keyed_variables(model).items()}
    arrays = read_model_arrays(path, keys=set(variables))
    _assign_arrays(path, variables, arrays, "model")
    return path
