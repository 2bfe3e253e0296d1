"""The ``arrays`` checkpoint store (the JAX backend's format before Orbax; still read and
written when ``training.checkpoint_format`` names it or a directory's checkpoints are in it).

A directory ``ckpt-N/`` holding one ``.npy`` file per variable and ``manifest.json`` (for each
variable: its key -- ``model/<Keras path>`` or ``optimizer/<Keras path>`` -- file, shape, dtype
and sha256; and ``step``, ``data_examples``, ``data_pipelines``). It is built in
``ckpt-N_temp-*/`` and renamed into place (:func:`t5pre.files.atomic_directory`); the keeper
lists it in the state file after that. Every value is gathered to every process first
(``process_allgather`` of an array sharded over processes) and the chief writes it all: simple,
and fine for small/base; the Orbax store (:mod:`t5pre.models.checkpoint_orbax`) writes per
process instead. No TensorFlow involved.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil

from t5pre.errors import CorruptCheckpoint
from t5pre.files import atomic_directory, atomic_write_json
from t5pre.models.checkpoint_variables import assign_arrays, check_keys, keyed_variables

MANIFEST = "manifest.json"
ARRAYS_FORMAT_VERSION = 1


def is_arrays_checkpoint(path: str) -> bool:
    return os.path.isfile(os.path.join(path, MANIFEST))


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


def read_model_arrays(path: str, keys=None) -> dict:
    """``{Keras path: numpy array}`` of the model weights of an arrays checkpoint."""
    wanted = None if keys is None else {f"model/{k}" for k in keys}
    arrays = load_arrays(path, keys=wanted)
    return {k[len("model/"):]: a for k, a in arrays.items() if k.startswith("model/")}


class ArrayStore:
    """``ckpt-N/`` directories of .npy files + manifest.json (see the module docstring)."""

    asynchronous = False

    def __init__(self, model, optimizer):
        self.model, self.optimizer = model, optimizer

    def read(self, path: str) -> tuple[int, int, int]:
        variables = keyed_variables(self.model, self.optimizer)
        manifest = read_manifest(path)
        check_keys(path, variables, manifest["arrays"])
        arrays = load_arrays(path)
        assign_arrays(path, variables, arrays, "model/optimizer")
        try:
            return (int(manifest["step"]), int(manifest["data_examples"]),
                    int(manifest["data_pipelines"]))
        except (KeyError, TypeError, ValueError):
            raise CorruptCheckpoint(f"{path}: {MANIFEST} lacks step/data position") from None

    def write(self, path: str, step: int, data_examples: int, data_pipelines: int,
              *, keep: bool = True) -> str:
        """Gathers every value (all processes must call), then writes ``path`` if ``keep``."""
        arrays = {k: _to_numpy(v) for k, v in keyed_variables(self.model,
                                                             self.optimizer).items()}
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

    def close(self) -> None:
        pass
