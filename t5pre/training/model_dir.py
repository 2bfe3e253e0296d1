"""Reading a training model directory back: ``load_model(DIR, checkpoint=None)``.

Layout (written by :class:`~t5pre.training.trainer.Trainer`): ``config.yaml`` (resolved run
config), ``model_config.json``, ``spiece.model`` + ``vocab.json``, ``checkpoints/``,
``logs/{train,eval}/``. Fine-tuning, evaluation, prediction and export start from here.
The readers live in :mod:`t5pre.models.store` (shared with inference); these are the training
layer's names for them.
"""

from __future__ import annotations

from t5pre.models import store


def load_run_config(model_dir: str):
    """The resolved RunConfig stored in ``DIR/config.yaml``."""
    return store.load_run_config(model_dir)


def load_model(model_dir, checkpoint=None):
    """Returns ``(model, vocabulary, run_config)`` from a training model directory.

    ``checkpoint``: None for the latest, a step number, or a checkpoint path prefix. Only the
    model weights are read (optimizer state is ignored). Raises CheckpointError for a missing
    directory, missing files or a directory without checkpoints.
    """
    model, vocabulary, run_config, _ = store.load_training_dir(model_dir, checkpoint)
    return model, vocabulary, run_config
