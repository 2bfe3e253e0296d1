"""Optional dependencies: import one, or fail with a one-line hint naming the extra to install.

The core install (TensorFlow, tensorflow-text, Keras, SentencePiece) trains, fine-tunes,
evaluates and exports SavedModels. Everything else is an extra of the package:

    t5pre[hf]         safetensors, tokenizers, transformers, torch: Hugging Face import/export
    t5pre[tfds]       tensorflow-datasets: tasks that read TFDS
    t5pre[jax]        jax, orbax-checkpoint: the model on the JAX backend, its checkpoints
    t5pre[keras-hub]  keras-hub (no t5pre module needs it; see README, "Install")
"""

from __future__ import annotations

import importlib

from t5pre.errors import MissingDependencyError

# import name -> (pip name, extra that installs it)
PACKAGES = {
    "safetensors": ("safetensors", "hf"),
    "tokenizers": ("tokenizers", "hf"),
    "transformers": ("transformers", "hf"),
    "torch": ("torch", "hf"),
    "tensorflow_datasets": ("tensorflow-datasets", "tfds"),
    "jax": ("jax", "jax"),
    "orbax": ("orbax-checkpoint", "jax"),
    "keras_hub": ("keras-hub", "keras-hub"),
}


def require(module: str, purpose: str):
    """`importlib.import_module(module)`, or MissingDependencyError saying what to install.

    `module` may be a submodule (`safetensors.numpy`); the top-level name picks the hint.
    `purpose` completes "... needs <package>", e.g. "`t5pre export --format hf`".
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        top = module.split(".")[0]
        missing = getattr(e, "name", None)
        if missing and missing != top and not missing.startswith(top + "."):
            raise  # the package is there but one of *its* imports failed: show that
        pip_name, extra = PACKAGES.get(top, (top, None))
        hint = f"pip install 't5pre[{extra}]'" if extra else f"pip install {pip_name}"
        raise MissingDependencyError(
            f"{purpose} needs {pip_name}, which is not installed: {hint}") from None
