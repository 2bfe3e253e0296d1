"""Heavy imports on first use: ``import t5pre`` and ``t5pre --help`` never load TensorFlow, and
a wrong flag is reported before TensorFlow's start-up (see ``t5pre.cli``).

Every package face (``t5pre``, ``t5pre.data``, ``t5pre.models``, ...) declares its public names
as a ``{name: module}`` map and gets its module ``__getattr__`` / ``__dir__`` from
:func:`lazy_exports`, so importing a face imports none of the modules behind it::

    _EXPORTS = {"Task": "t5pre.data.registry", ...}
    __all__ = sorted(_EXPORTS)
    __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Callable, Mapping


def tensorflow():
    """The ``tensorflow`` module, imported when first needed."""
    import tensorflow as tf

    return tf


def hide_accelerators_from_tensorflow() -> bool:
    """Makes TensorFlow see no GPU or TPU; returns False when it was too late to do so.

    On the JAX backend TensorFlow only runs the input pipeline (tf.data on the host), but a
    TensorFlow that sees a GPU reserves most of its memory on its first op, leaving JAX the
    rest. Device visibility can only be set before TensorFlow's runtime starts (its first op),
    so the JAX backend calls this before it builds anything. When the runtime has already
    started and sees an accelerator, a warning says so."""
    import logging

    tf = tensorflow()
    hidden = True
    for kind in ("GPU", "TPU"):
        try:
            if tf.config.list_physical_devices(kind):
                tf.config.set_visible_devices([], kind)
        except RuntimeError:  # "Visible devices cannot be modified after being initialized"
            if tf.config.get_visible_devices(kind):
                hidden = False
                logging.getLogger("t5pre").warning(
                    "TensorFlow started before the JAX backend could hide the %ss from it; it "
                    "may hold most of their memory. Build the JAX trainer before any TensorFlow "
                    "op runs", kind)
    return hidden


def import_tensorflow_quietly():
    """Import TensorFlow with the process's stderr (fd 2) closed off: its native libraries log
    through absl before absl's logging is initialised, which ignores TF_CPP_MIN_LOG_LEVEL and
    prints "All log messages before absl::InitializeLog() ..." and CUDA-probe lines on every
    command. An import failure still raises, after stderr is restored."""
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            try:
                import tensorflow  # noqa: F401
            finally:
                os.dup2(saved, 2)
    finally:
        os.close(saved)


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[Callable, Callable]:
    """``(__getattr__, __dir__)`` for the module ``package`` whose names ``exports`` maps to the
    modules defining them. A name is imported on first access and then kept in the package, so
    later accesses cost nothing."""
    exports = dict(exports)

    def __getattr__(name: str):
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list:
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return __getattr__, __dir__
