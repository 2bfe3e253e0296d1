"""Checkpoints in ``DIR/checkpoints``: model, optimizer, step and data position, written atomically.

**Atomicity.** ``tf.train.CheckpointManager`` writes the ``ckpt-N.index``/``.data`` files first and
updates the small ``checkpoint`` state file last (an atomic rename). Readers find checkpoints
only through that state file, so a process killed while writing leaves either the previous
state (the half-written ``ckpt-N`` files are ignored and overwritten later) or the new one,
never a state pointing at a partial checkpoint (tested with SIGKILL in the middle of a save).
On restore we also check that the ``step`` stored inside ``ckpt-N`` is N.

**Multi-worker.** Under MultiWorkerMirroredStrategy every worker must run the save (it may
involve collectives), but only the chief's copy is kept: other workers write into a private
temporary directory that is deleted right after. With the Orbax format every JAX process writes
its own shards into the same checkpoint. Every worker restores from the chief's directory, which
therefore has to be on a filesystem all workers see (GCS, NFS, ...; the JAX formats take local
or network-mounted paths).

**Formats.** Each is a store in its own module that writes and reads one checkpoint
(``read``, ``write``, ``storage_errors``, ``delete``, ``close``); this module owns everything
else: which checkpoints exist (the state file), rotation, fallback, orphans, the format a run
writes (:func:`choose_format`, ``training.checkpoint_format``) and the one reader of model
weights (:func:`read_model_arrays`). ``format="tf"`` (the TensorFlow backend,
:mod:`t5pre.models.checkpoint_tf`): ``ckpt-N.index`` + ``ckpt-N.data-*`` written by
``tf.train.Checkpoint``. ``format="orbax"`` (the JAX backend's default,
:mod:`t5pre.models.checkpoint_orbax`): ``ckpt-N/`` an Orbax checkpoint written per process and
asynchronously, in Orbax's temporary directory renamed when complete; the keeper lists it only
after that (:meth:`CheckpointKeeper.poll` / :meth:`~CheckpointKeeper.wait`), so the atomicity
argument above holds for it too. ``format="arrays"`` (:mod:`t5pre.models.checkpoint_arrays`;
the JAX backend's earlier format): a directory ``ckpt-N/`` of ``.npy`` files and
``manifest.json``, built in ``ckpt-N_temp-*/`` and renamed into place, then the state file is
updated. All formats share the state file (``checkpoints/checkpoint``, the same text format
TensorFlow writes), rotation, fallback past damaged checkpoints and the removal of orphans;
:func:`latest_checkpoint`, :func:`find_checkpoint` and :func:`restore_model_weights` read every
format, so a directory trained on JAX exports on TensorFlow (model weights are matched by Keras
path, the same on both backends).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time

from t5pre.errors import CheckpointError, CorruptCheckpoint, StorageError
from t5pre.files import atomic_write_text
from t5pre.lazy import tensorflow as _tf
from t5pre.models import checkpoint_arrays, checkpoint_orbax, checkpoint_tf
from t5pre.models.checkpoint_arrays import (  # noqa: F401 (public names, kept here)
    ARRAYS_FORMAT_VERSION, MANIFEST, ArrayStore, is_arrays_checkpoint, load_arrays,
    read_manifest)
from t5pre.models.checkpoint_orbax import is_orbax_checkpoint
from t5pre.models.checkpoint_tf import TFStore, model_weights_trackable  # noqa: F401
from t5pre.models.checkpoint_variables import assign_arrays, keyed_variables  # noqa: F401
from t5pre.models.layout import CHECKPOINT_STATE_FILE, CHECKPOINTS_DIR

CHECKPOINT_SUBDIR = CHECKPOINTS_DIR
_NAME = "ckpt"
FORMATS = ("tf", "arrays", "orbax")
#: The formats of the JAX backend; a JAX run reads both (a directory may move from one to the
#: other) and writes the one it was given.
JAX_FORMATS = ("arrays", "orbax")
#: ``training.checkpoint_format``: auto, or one of FORMATS.
FORMAT_CHOICES = ("auto",) + FORMATS


def checkpoint_dir(model_dir: str) -> str:
    return os.path.join(model_dir, CHECKPOINT_SUBDIR)


def checkpoint_format_of(path: str) -> str | None:
    """``"tf"``, ``"arrays"`` or ``"orbax"``: the format of the checkpoint ``path``
    (``.../ckpt-N``) by its files; None when it has none."""
    if is_orbax_checkpoint(path):
        return "orbax"
    if is_arrays_checkpoint(path):
        return "arrays"
    if os.path.exists(path + ".index"):
        return "tf"
    if "://" in path and _tf().io.gfile.exists(path + ".index"):
        return "tf"
    return None


def choose_format(model_dir: str, requested: str, backend: str, log=None) -> str:
    """The format a run writes: ``requested`` (``training.checkpoint_format``) checked against
    the backend; ``auto`` is ``tf`` on TensorFlow and, on JAX, the format of the directory's
    newest checkpoint when it is a JAX one (a run keeps its format), else ``orbax`` (``arrays``
    with a note when orbax-checkpoint is not installed)."""
    from t5pre.errors import ConfigError

    if requested not in FORMAT_CHOICES:
        raise ConfigError(f"training.checkpoint_format = {requested!r}: use one of "
                          f"{', '.join(FORMAT_CHOICES)}")
    latest = latest_checkpoint(model_dir) if os.path.isdir(model_dir) else None
    kind = checkpoint_format_of(latest) if latest else None
    if backend == "tensorflow":
        if requested in JAX_FORMATS:
            if kind in JAX_FORMATS:  # a JAX run's recorded config: say what the directory is
                raise CheckpointError(
                    f"{latest}: a JAX-backend ({kind}) checkpoint; resume it with "
                    "KERAS_BACKEND=jax, or start a new --model-dir with model.init_from set to "
                    "this directory")
            raise ConfigError(f"training.checkpoint_format = {requested!r} is a JAX-backend "
                              "format; on TensorFlow use auto or tf (or set KERAS_BACKEND=jax)")
        return "tf"
    if requested == "tf":
        raise ConfigError("training.checkpoint_format = 'tf' needs the TensorFlow backend; on "
                          "JAX use auto, orbax or arrays")
    if requested == "auto":
        if kind in JAX_FORMATS:
            return kind
        requested = "orbax"
        try:
            import orbax.checkpoint  # noqa: F401
        except ImportError:
            (log or (lambda m: None))(
                "note: orbax-checkpoint is not installed: checkpoints in the arrays format "
                "(gathered to process 0); pip install 't5pre[jax]' for per-process Orbax "
                "checkpoints")
            return "arrays"
    return requested


def checkpoint_exists(path: str) -> bool:
    """Whether ``path`` (``.../ckpt-N``) has its files, in any format."""
    if is_arrays_checkpoint(path) or is_orbax_checkpoint(path):
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


class CheckpointKeeper:
    """Saves and restores a run's state; the state file is the chief's (see module docstring).

    The state holds the model and optimizer variables, ``step``, ``data_examples`` (global
    examples consumed) and ``data_pipelines`` (input pipelines when they were consumed);
    :meth:`restored_position` gives the last two as ints after a restore. ``format`` is ``"tf"``
    (``tf.train.Checkpoint``), ``"arrays"`` (numpy files) or ``"orbax"`` (per-process Orbax
    checkpoints, asynchronous); everything below is shared by all. A JAX keeper (arrays or
    orbax) restores either JAX format and writes its own.

    Recovery (nothing is lost to a damaged file): :meth:`restore_latest` tries the checkpoints
    newest first and falls back past any that cannot be read (a missing ``.index`` or manifest,
    a truncated or zeroed ``.data``, ``.npy`` or Orbax file, a value that fails its sha256 or
    fingerprint), saying which and why; when the ``checkpoint`` state file itself is unreadable
    it recovers the list from the checkpoints on disk. Rotation deletes a checkpoint only when
    ``max_to_keep`` newer checkpoints that were written by this keeper or restored by it exist,
    so a good checkpoint is never dropped for a damaged newer one.

    Asynchronous saves (orbax): :meth:`save` returns while the files are still being written;
    the checkpoint is listed in the state file (and rotation runs) only once they are complete
    -- by :meth:`poll` (the trainer calls it every step; it never blocks), :meth:`wait`, the
    next :meth:`save`, a restore or :meth:`close`. A kill before that leaves it unlisted.
    """

    def __init__(self, model_dir: str, *, model, optimizer, is_chief: bool = True,
                 max_to_keep: int = 3, log=None, format: str = "tf",
                 asynchronous: bool = True):
        if format not in FORMATS:
            raise ValueError(f"checkpoint format {format!r}: use one of {', '.join(FORMATS)}")
        self.model_dir = model_dir
        self.is_chief = is_chief
        self.max_to_keep = max_to_keep
        self.format = format
        self._log = log or (lambda msg: None)
        self._model, self._optimizer = model, optimizer
        self._asynchronous = asynchronous
        self._stores = {}
        self._store = self._store_for(format)
        if format == "tf":  # the TF objects, as before (callers read keeper.step etc.)
            self.checkpoint = self._store.checkpoint
            self.step = self._store.step
            self.data_examples = self._store.data_examples
            self.data_pipelines = self._store.data_pipelines
        self.directory = checkpoint_dir(model_dir)
        self._write_dir = self.directory if is_chief or format != "tf" else \
            tempfile.mkdtemp(prefix="t5pre-nonchief-ckpt-")
        self._kept = None  # steps in the state file, oldest first (None = not read yet)
        self._position = (0, 0, 1)  # (step, data_examples, data_pipelines) of the last restore/save
        self._pending = None  # (step, listed-before) of an asynchronous save not yet listed
        self._polled = 0.0

    def _store_for(self, format: str):
        """The store writing and reading ``format`` (one per format, made on first use)."""
        if format not in self._stores:
            if format == "tf":
                store = TFStore(self._model, self._optimizer)
            elif format == "arrays":
                store = ArrayStore(self._model, self._optimizer)
            else:
                store = checkpoint_orbax.OrbaxStore(self._model, self._optimizer,
                                                    asynchronous=self._asynchronous)
            self._stores[format] = store
        return self._stores[format]

    def latest(self) -> str | None:
        return latest_checkpoint(self.model_dir)

    def restored_position(self) -> tuple[int, int]:
        """``(data_examples, data_pipelines)`` of the last restore or save."""
        _, examples, pipelines = self._position
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
        checkpoint does not fit the model/optimizer (e.g. another model size) or is another
        backend's, CorruptCheckpoint when its files cannot be read."""
        self.wait()
        kind = checkpoint_format_of(path)
        if self.format == "tf":
            if kind in JAX_FORMATS:
                raise CheckpointError(
                    f"{path}: a JAX-backend ({kind}) checkpoint; resume it with "
                    "KERAS_BACKEND=jax, or start a new --model-dir with model.init_from set "
                    "to this directory")
            store = self._store
        else:
            if kind == "tf":
                raise CheckpointError(
                    f"{path}: a TensorFlow checkpoint; this run (JAX backend) resumes only "
                    "its own format. Resume it on the TensorFlow backend, or start a new "
                    "--model-dir with model.init_from set to this directory")
            if kind is None:
                raise CorruptCheckpoint(f"{path}: missing or incomplete (neither {MANIFEST} nor "
                                        "an Orbax manifest/ in it)")
            store = self._store_for(kind)
        self._position = store.read(path)
        step = self._position[0]
        expected = checkpoint_step(path)
        if step != expected:
            raise CorruptCheckpoint(f"{path}: holds step {step}, expected {expected} (corrupt)")
        return step

    def restore_latest(self) -> tuple[int, str | None]:
        """Restores the newest checkpoint that can be read: ``(step, path)``, ``(0, None)`` for a
        directory without checkpoints. Damaged ones are skipped with a warning naming them; if
        every checkpoint is damaged, CheckpointError (never a silent restart at step 1)."""
        self.wait()
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
        deleted, oldest first. An asynchronous store returns at once; the listing follows when
        its files are complete (:meth:`poll`, :meth:`wait`)."""
        self.wait()
        store = self._store
        self._position = (step, data_examples, data_pipelines)
        if self.format == "orbax":  # every process writes its own shards
            listed = list(self._read_kept()) if self.is_chief else []
            if self.is_chief:
                os.makedirs(self.directory, exist_ok=True)
            try:
                path = store.write(self._path(step), step, data_examples, data_pipelines)
            except store.storage_errors() as e:
                self._failed(step, listed, e)
            self._pending = (step, listed)
            if not store.asynchronous:
                self.wait()
            return path if self.is_chief else None
        if not self.is_chief:
            if self.format == "arrays":  # takes part in gathering sharded values, writes nothing
                store.write(self._path(step), step, data_examples, data_pipelines, keep=False)
            else:
                store.write(self._path(step, self._write_dir), step, data_examples,
                            data_pipelines)
                shutil.rmtree(self._write_dir, ignore_errors=True)
            return None
        listed = self._read_kept()
        try:
            os.makedirs(self.directory, exist_ok=True)
            path = store.write(self._path(step), step, data_examples, data_pipelines)
            self._list(step, listed)
        except store.storage_errors() as e:
            self._failed(step, listed, e)
        return path

    def _list(self, step: int, listed: list[int]) -> None:
        """The chief's last act of a save: ``ckpt-STEP`` goes into the state file, then the
        checkpoints beyond ``max_to_keep`` are deleted, oldest first."""
        kept = [s for s in listed if s != step]
        kept.append(step)
        drop = kept[:-self.max_to_keep] if self.max_to_keep and len(kept) > self.max_to_keep \
            else []
        kept = kept[len(drop):]
        _write_state(self.directory, self._path(step), [self._path(s) for s in kept])
        self._kept = kept
        for old in drop:
            self._store.delete(self._path(old))

    def _failed(self, step: int, listed: list[int], error: BaseException):
        if self.is_chief and step not in listed:  # a partial ckpt-STEP never stays behind
            self._store.delete(self._path(step))
        raise StorageError.from_os_error(error, self.model_dir) from None

    def poll(self) -> None:
        """Lists an asynchronous save whose files are complete; never blocks (at most four
        looks at the file system a second)."""
        if self._pending is None:
            return
        now = time.monotonic()
        if now - self._polled < 0.25:
            return
        self._polled = now
        if self._store.committed():
            self.wait()

    def wait(self) -> None:
        """Blocks until an asynchronous save is complete and listed (StorageError if it
        failed)."""
        if self._pending is None:
            return
        (step, listed), self._pending = self._pending, None
        store = self._store
        try:
            store.wait()
            if self.is_chief:
                self._list(step, listed)
        except store.storage_errors() as e:
            self._failed(step, listed, e)

    def remove_orphans(self) -> list[str]:
        """Deletes what killed saves leave behind (``ckpt-N_temp*``, ``ckpt-N_old-*`` of a
        replaced damaged checkpoint, Orbax's ``ckpt-N.orbax-checkpoint-tmp*``,
        ``checkpoint.tmp*``). Only call it while holding the model directory's lock."""
        removed = []
        if not self.is_chief or not os.path.isdir(self.directory):
            return removed
        for name in os.listdir(self.directory):
            full = os.path.join(self.directory, name)
            if (re.fullmatch(rf"{_NAME}-\d+_(temp|old-).*", name)
                    or re.fullmatch(rf"{_NAME}-\d+{re.escape(checkpoint_orbax.TMP_SUFFIX)}.*",
                                    name)
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

    def close(self) -> None:
        """Finishes a pending asynchronous save (a failure is logged: close runs on the way out
        of a run that may be failing already) and releases the stores."""
        try:
            self.wait()
        except StorageError as e:
            self._log(f"warning: the last checkpoint was not completed ({e})")
        for store in self._stores.values():
            store.close()
        if not self.is_chief and self.format == "tf":
            shutil.rmtree(self._write_dir, ignore_errors=True)


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
    """Steps with a ``ckpt-N.index`` file, a ``ckpt-N/manifest.json`` or an Orbax
    ``ckpt-N/manifest/``, oldest first."""
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
        if m and checkpoint_exists(os.path.join(directory, n)):
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


def read_model_arrays(path: str, keys=None) -> dict:
    """``{Keras path: numpy array}`` of the model weights held by the checkpoint ``path``, in
    either format (only ``keys`` when given).

    The one reader of a checkpoint's model weights: every backend reads every format through
    it and assigns the arrays by Keras path, so a directory trained on TensorFlow gives the
    same tensors on JAX and the other way round. (Restoring a TensorFlow checkpoint through
    ``tf.train.Checkpoint`` on the JAX backend matched no variable -- Keras' JAX variables are
    not TensorFlow trackables -- and silently kept the initial values.)"""
    if is_orbax_checkpoint(path):
        arrays = checkpoint_orbax.read_model_arrays(path, keys)
        step = checkpoint_orbax.read_position(path)[0]
        if step != checkpoint_step(path):
            raise CorruptCheckpoint(f"{path}: holds step {step}, expected "
                                    f"{checkpoint_step(path)} (corrupt)")
        return arrays
    if is_arrays_checkpoint(path):
        return checkpoint_arrays.read_model_arrays(path, keys)
    return checkpoint_tf.read_model_arrays(path, keys, expected_step=checkpoint_step(path))


def read_checkpoint_arrays(path: str) -> dict:
    """Every array of a JAX-format checkpoint (arrays or orbax) as numpy, keyed
    ``model/<Keras path>`` / ``optimizer/<Keras path>``, each checked (sha256 / fingerprint);
    for tests and tools that compare whole states."""
    if is_orbax_checkpoint(path):
        return checkpoint_orbax.read_arrays(path)
    return load_arrays(path)


def restore_model_weights(model, model_dir: str, checkpoint=None) -> str:
    """Loads only the model's weights from a model directory's checkpoint (for inference or
    as the starting point of fine-tuning), in either format and on either backend, through
    :func:`read_model_arrays`. Every weight of ``model`` must be in the checkpoint with its
    shape: a missing one is a CheckpointError naming it, never a silently kept initial value.
    Returns the checkpoint path used."""
    path = find_checkpoint(model_dir, checkpoint)
    variables = {k[len("model/"):]: v for k, v in keyed_variables(model).items()}
    arrays = read_model_arrays(path, keys=set(variables))
    assign_arrays(path, variables, arrays, "model")
    return path
