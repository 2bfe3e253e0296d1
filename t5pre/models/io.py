"""Save and load a model's files: the pretrained layout that `t5pre convert hf` writes and that
fine-tuning, evaluation and export read, and the model files of every model directory.

    DIR/model_config.json   T5Config fields (+ format version)
    DIR/model.weights.h5    Keras weights
    DIR/spiece.model        SentencePiece model, sentinels included (when a vocabulary is given)
    DIR/vocab.json          its metadata (extra_ids, vocab_size)

(the names: `t5pre.models.layout`). `write_model_files` is the one writer of
`model_config.json` (and of the vocabulary files beside it): `save_pretrained` and the trainer's
model directory both go through it.

Writes are atomic (`t5pre.files.atomic_directory`): a new directory is assembled in a sibling
`NAME_temp-*` and renamed into place, so a crash leaves either nothing or the complete directory.
Saving into an existing directory (e.g. a training model dir that also holds checkpoints/ and
logs/) moves the finished files in one by one, `model_config.json` last, and leaves the other
files alone.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Optional

from t5pre.errors import CheckpointError, T5preError
from t5pre.files import atomic_directory, atomic_write_json
from t5pre.models.config import T5Config
from t5pre.models.layout import FORMAT_VERSION, MODEL_CONFIG_FILE, VOCABULARY_FILE, WEIGHTS_FILE


def model_config_values(model_config_or_model) -> Optional[dict]:
    """What `model_config.json` holds for a T5Config (or a model with a `.config`): the format
    version and the config's fields; None for an object without a config (a test double)."""
    config = getattr(model_config_or_model, "config", model_config_or_model)
    if config is None or not hasattr(config, "to_dict"):
        return None
    return {"format_version": FORMAT_VERSION, **config.to_dict()}


def write_model_files(model_dir, model_config_or_model, vocabulary=None) -> Optional[dict]:
    """Write the files that say which model a directory holds: the vocabulary (`spiece.model`,
    `vocab.json`, when `vocabulary` is given) and then `model_config.json`, each atomically
    (`t5pre.files`); the weights and checkpoints are the caller's. `model_config.json` comes
    last: it marks the set complete. Returns the values written to it (None when
    `model_config_or_model` has no config, in which case it is not written)."""
    model_dir = os.fspath(model_dir)
    os.makedirs(model_dir, exist_ok=True)
    if vocabulary is not None and hasattr(vocabulary, "save"):
        vocabulary.save(model_dir)
    values = model_config_values(model_config_or_model)
    if values is not None:
        atomic_write_json(os.path.join(model_dir, MODEL_CONFIG_FILE), values)
    return values


def _check_vocabulary_fits(model, vocabulary, directory) -> None:
    if vocabulary is not None:
        vocab_rows = int(vocabulary.vocab_size)
        if model.config.vocab_size < vocab_rows:
            raise CheckpointError(
                f"cannot save to {directory}: the vocabulary has {vocab_rows} ids but the model's "
                f"embedding has only {model.config.vocab_size} rows"
            )


def write_pretrained(model, vocabulary, directory) -> None:
    """The files of `save_pretrained` written into the existing `directory`, one by one: for a
    caller that assembles a larger directory atomically itself (fine-tuning's `best/`)."""
    directory = pathlib.Path(directory)
    _check_vocabulary_fits(model, vocabulary, directory)
    model.save_weights(str(directory / WEIGHTS_FILE))
    write_model_files(directory, model, vocabulary)


def save_pretrained(model, vocabulary, directory) -> pathlib.Path:
    """Write `model` (a T5Model) and `vocabulary` (or None) to `directory`; returns its path."""
    directory = pathlib.Path(directory)
    _check_vocabulary_fits(model, vocabulary, directory)
    if directory.exists() and not directory.is_dir():
        raise CheckpointError(f"cannot save to {directory}: it exists and is not a directory")
    with atomic_directory(directory, merge=True, last=(MODEL_CONFIG_FILE,)) as staging:
        write_pretrained(model, vocabulary, staging)
    return directory


def read_model_config(directory) -> T5Config:
    """The T5Config stored in `directory/model_config.json`."""
    directory = pathlib.Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"model directory not found: {directory}")
    path = directory / MODEL_CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(
            f"{directory} is not a saved model: {MODEL_CONFIG_FILE} is missing "
            "(a save was interrupted, or this is not a t5pre model directory)"
        )
    try:
        values = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot read the model config ({e})") from None
    if not isinstance(values, dict):
        raise CheckpointError(f"{path}: expected a JSON object of model fields")
    version = values.pop("format_version", FORMAT_VERSION)
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path}: format_version {version} is not supported (expected {FORMAT_VERSION})")
    return T5Config.from_dict(values, source=str(path))


def load_vocabulary_from(directory):
    """The vocabulary saved in `directory`, or None when it has no spiece.model."""
    directory = pathlib.Path(directory)
    if not (directory / VOCABULARY_FILE).is_file():
        return None
    from t5pre.data.vocabulary import load_vocabulary

    try:
        return load_vocabulary(str(directory))
    except T5preError as e:
        raise CheckpointError(f"{directory}: the saved vocabulary cannot be loaded: {e}") from None


def load_weights_into(model, path):
    """`model.load_weights(path)` with the failures a user can cause turned into CheckpointError."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file missing: {path}")
    try:
        model.load_weights(str(path))
    except Exception as e:  # h5py OSError (truncated/corrupt), ValueError (missing/mismatched)
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{path}: cannot load the weights (partial, corrupt, or saved from a different model "
            f"config): {message}"
        ) from None


def load_pretrained(directory, dtype=None):
    """Load `(model, vocabulary or None)` from a directory written by `save_pretrained`.

    `dtype` is an optional Keras dtype policy for the model (e.g. "mixed_bfloat16"); the global
    policy applies otherwise.
    """
    from t5pre.models.t5 import T5Model

    directory = pathlib.Path(directory)
    config = read_model_config(directory)
    vocabulary = load_vocabulary_from(directory)
    if vocabulary is not None and config.vocab_size < vocabulary.vocab_size:
        raise CheckpointError(
            f"{directory}: the vocabulary (spiece.model) has {vocabulary.vocab_size} ids but the "
            f"model's embedding ({MODEL_CONFIG_FILE} vocab_size) has only {config.vocab_size} rows"
        )
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"{directory}: {WEIGHTS_FILE} is missing")
    model = T5Model(config, **({"dtype": dtype} if dtype else {}))
    load_weights_into(model, weights)
    return model, vocabulary
