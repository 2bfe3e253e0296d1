"""Seeding a run: Keras (initialisers, dropout), Python and NumPy -- never TensorFlow's global seed.

``keras.utils.set_random_seed`` also calls ``tf.random.set_seed`` whenever TensorFlow is installed
(importing it if need be), on every Keras backend. That does two kinds of harm here:

* it clears TF's eager kernel cache, which destroys resources held by earlier kernels: a
  SentencePiece tokenizer used before training starts then fails inside tf.data with
  "Resource ...SentencepieceOp does not exist";
* it re-seeds the tf.data shuffles of the input pipeline, so a JAX run would read other batches
  than the same run on TensorFlow.

Nothing here needs the TF global seed: Keras draws from its own seed generator and the data
pipelines seed their random ops explicitly. Shared by both backends (``step_tf``, ``step_jax``).
"""

from __future__ import annotations

import importlib.util
import sys


def seed_keras(seed: int) -> None:
    """``keras.utils.set_random_seed(seed)`` with ``tf.random.set_seed`` switched off."""
    import keras

    tf = sys.modules.get("tensorflow")
    if tf is None and importlib.util.find_spec("tensorflow") is not None:
        import tensorflow as tf  # Keras would import it anyway; import it first to patch it
    original = getattr(getattr(tf, "random", None), "set_seed", None)
    if original is not None:
        tf.random.set_seed = lambda _seed: None
    try:
        keras.utils.set_random_seed(seed)
    finally:
        if original is not None:
            tf.random.set_seed = original
