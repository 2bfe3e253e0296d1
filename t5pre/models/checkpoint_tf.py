"""The TensorFlow backend's checkpoint store: ``ckpt-N.index`` + ``ckpt-N.data-*`` written by
``tf.train.Checkpoint`` (model weights keyed by Keras path, the optimizer, ``step``,
``data_examples``, ``data_pipelines``), and the reader of its model weights on any backend.

The keeper (:mod:`t5pre.models.checkpoints`) owns which checkpoints exist, rotation, fallback
and the state file; this module only writes and reads one checkpoint.
"""

from __future__ import annotations

import os
import re

from t5pre.errors import CheckpointError, CorruptCheckpoint
from t5pre.lazy import tensorflow as _tf
from t5pre.models.checkpoint_variables import variable_key


def corrupt(path: str, error: BaseException) -> CheckpointError:
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
        key = variable_key(v, i)
        if key in weights:
            key = f"{key}_{i}"
        weights[key] = v
    holder.weights = weights
    return holder


class TFStore:
    """``tf.train.Checkpoint`` files ``ckpt-N.index`` / ``ckpt-N.data-*``."""

    asynchronous = False

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

    def read(self, path: str) -> tuple[int, int, int]:
        tf = _tf()
        if not tf.io.gfile.exists(path + ".index"):
            raise CorruptCheckpoint(f"{path}: {os.path.basename(path)}.index is missing")
        try:
            status = self.checkpoint.restore(path)
            status.assert_existing_objects_matched()
        except (IndexError, AssertionError, ValueError, tf.errors.OpError) as e:
            if _is_corruption(e):
                raise corrupt(path, e) from None
            first = str(e).strip().splitlines()[0][:300]
            raise CheckpointError(
                f"{path}: checkpoint does not match this model/optimizer ({first}); was the "
                "model directory trained with another model or optimizer config?") from None
        return self.position()

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
        delete_checkpoint_files(path)

    def close(self) -> None:
        pass


def delete_checkpoint_files(prefix: str) -> None:
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
        raise corrupt(path, e) from None


def read_model_arrays(path: str, keys=None, *, expected_step: int) -> dict:
    """``{Keras path: numpy array}`` of the model weights of the TensorFlow checkpoint ``path``
    (only ``keys`` when given); through ``tf.train.load_checkpoint``, on any Keras backend.
    CorruptCheckpoint unless the checkpoint is whole and holds ``expected_step``."""
    reader = _tf_reader(path)
    tf = _tf()
    # The object graph is the last record of the .data file: reading it checks that the file is
    # whole (a truncated checkpoint is damaged even when the model's tensors survived), and the
    # step that it is the checkpoint its name says.
    try:
        reader.get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH")
        step = int(reader.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE"))
    except (IndexError, ValueError, tf.errors.OpError) as e:
        raise corrupt(path, e) from None
    if step != expected_step:
        raise CorruptCheckpoint(f"{path}: holds step {step}, expected {expected_step} "
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
            raise corrupt(path, e) from None
    return out


def _as_numpy_dtype(array):
    """TensorFlow's reader returns bfloat16 in its own numpy dtype; ml_dtypes' is the one JAX
    and the other formats use."""
    import numpy as np

    array = np.asarray(array)
    if str(array.dtype) == "bfloat16" and type(array.dtype).__module__ != "ml_dtypes":
        import ml_dtypes

        array = array.view(np.uint16).view(ml_dtypes.bfloat16)
    return array
