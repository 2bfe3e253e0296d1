"""Reading a training model directory back: ``load_model(DIR, checkpoint=None)``.

Layout (written by :class:`~t5pre.training.trainer.Trainer`): ``config.yaml`` (resolved run
config), ``model_config.json``, ``spiece.model`` + ``vocab.json``, ``checkpoints/``,
``logs/{train,eval}/``. Fine-tuning, evaluation, prediction and export start from here.
"""

from __future__ import annotations

import os

from t5pre.errors import CheckpointError
from t5pre.training import checkpointing


def load_run_config(model_dir: str):
    """The resolved RunConfig stored in ``DIR/config.yaml``."""
    from t5pre.training.config import load_config

    path = os.path.join(model_dir, "config.yaml")
    if not os.path.isfile(path):
        raise CheckpointError(f"{model_dir}: config.yaml is missing (not a t5pre model directory)")
    return load_config(path)


def load_model(model_dir, checkpoint=None):
    """Returns ``(model, vocabulary, run_config)`` from a training model directory.

    ``checkpoint``: None for the latest, a step number, or a checkpoint path prefix. Only the
    model weights are read (optimizer state is ignored). Raises CheckpointError for a missing
    directory, missing files or a directory without checkpoints.
    """
    model_dir = os.fspath(model_dir)
    if not os.path.isdir(model_dir):
        raise CheckpointError(f"{model_dir}: model directory not found")
    path = checkpointing.find_checkpoint(model_dir, checkpoint)
    from t5pre.models.io import load_vocabulary_from, read_model_config
    from t5pre.models.t5 import T5Model

    run_config = load_run_config(model_dir)
    model_config = read_model_config(model_dir)
    vocabulary = load_vocabulary_from(model_dir)
    if vocabulary is not None and model_config.vocab_size < vocabulary.vocab_size:
        raise CheckpointError(f"{model_dir}: the vocabulary has {vocabulary.vocab_size} ids but "
                              f"the model has {model_config.vocab_size} embedding rows")
    model = T5Model(model_config)
    model(_dummy_features(run_config), training=False)
    checkpointing.restore_model_weights(model, model_dir, path)
    return model, vocabulary, run_config


def _dummy_features(run_config) -> dict:
    import numpy as np

    n, m = run_config.data.sequence_length.inputs, run_config.data.sequence_length.targets
    n, m = min(n, 8), min(m, 8)
    ones = lambda k: np.ones((1, k), "int32")  # noqa: E731
    return {"encoder_token_ids": ones(n), "encoder_padding_mask": ones(n),
            "decoder_token_ids": ones(m), "decoder_padding_mask": ones(m)}
