"""A run's state as keyed variables: what every checkpoint store saves and restores.

``keyed_variables(model, optimizer)`` names each variable ``model/<Keras path>`` or
``optimizer/<Keras path>`` (a duplicate path gets ``_i``): the keys are the same on TensorFlow
and JAX, so a store that keys its arrays by them is portable between backends.
:func:`check_keys` and :func:`assign_arrays` are the one comparison of a checkpoint's arrays
with the variables of this run (CheckpointError naming the first difference).
"""

from __future__ import annotations

from t5pre.errors import CheckpointError


def variable_key(v, i: int) -> str:
    return getattr(v, "path", None) or getattr(v, "name", None) or f"variable_{i}"


def keyed_variables(model, optimizer=None) -> dict:
    """``{"model/<path>": variable, "optimizer/<path>": variable}`` (duplicates get ``_i``)."""
    out = {}
    for prefix, variables in (("model", model.weights),
                              ("optimizer", optimizer.variables if optimizer is not None else [])):
        for i, v in enumerate(variables):
            key = variable_key(v, i)
            if f"{prefix}/{key}" in out:
                key = f"{key}_{i}"
            out[f"{prefix}/{key}"] = v
    return out


def check_keys(path: str, variables, listed) -> None:
    """CheckpointError when the checkpoint at ``path`` lists other keys than ``variables``."""
    extra = [k for k in listed if k not in variables]
    missing = [k for k in variables if k not in listed]
    if extra or missing:
        diff = (missing or extra)[:3]
        raise CheckpointError(
            f"{path}: checkpoint does not match this model/optimizer ("
            f"{'missing' if missing else 'unexpected'}: {', '.join(diff)}); was the model "
            "directory trained with another model or optimizer config?")


def check_shapes(path: str, variables: dict, shapes: dict, what: str) -> None:
    """CheckpointError naming the first variable the checkpoint lacks or holds in another shape
    (``shapes``: ``{key: shape}`` of the checkpoint)."""
    missing = [k for k in variables if k not in shapes]
    if missing:
        raise CheckpointError(
            f"{path}: checkpoint does not match this {what} (no value for "
            f"{', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}); was the model "
            "directory trained with another model or optimizer config?")
    for key, v in variables.items():
        if tuple(shapes[key]) != tuple(v.shape):
            raise CheckpointError(
                f"{path}: checkpoint does not match this {what} ({key} has shape "
                f"{tuple(shapes[key])} there, {tuple(v.shape)} here)")


def assign_arrays(path: str, variables: dict, arrays: dict, what: str) -> None:
    """Assigns ``arrays`` into ``variables`` (both keyed alike) after :func:`check_shapes`."""
    check_shapes(path, variables, {k: a.shape for k, a in arrays.items()}, what)
    for key, v in variables.items():
        v.assign(arrays[key].astype(v.dtype) if str(arrays[key].dtype) != str(v.dtype)
                 else arrays[key])
