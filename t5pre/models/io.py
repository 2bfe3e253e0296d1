"""Save and load a model in the pretrained layout: the unit that `t5pre convert hf` writes and that
fine-tuning, evaluation and export read.

    DIR/model_config.json   T5Config fields (+ format version)
    DIR/model.weights.h5    Keras weights
    DIR/spiece.model        SentencePiece model, sentinels included (when a vocabulary is given)
    DIR/vocab.json          its metadata (extra_ids, vocab_size)

Writes are atomic: a new directory is assembled in a hidden sibling and renamed into place, so a
crash leaves either nothing or the complete directory. Saving into an existing directory (e.g. a
training model dir that also holds checkpoints/ and logs/) replaces the files one by one with
`os.replace`, writing `model_config.json` last, and leaves the other files alone.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import tempfile

from t5pre.errors import CheckpointError, T5preError
from t5pre.models.config import T5Config
# The model directory's file names and format belong to t5pre.models.store; kept here as names
# for the callers that import them from this module.
from t5pre.models.store import FORMAT_VERSION, MODEL_CONFIG_FILE, WEIGHTS_FILE  # noqa: F401
from t5pre.models.store import write_model_files


def _write_into(model, vocabulary, directory: pathlib.Path):
    model.save_weights(str(directory / WEIGHTS_FILE))
    write_model_files(directory, model, vocabulary)


def save_pretrained(model, vocabulary, directory) -> pathlib.Path:
    """Write `model` (a T5Model) and `vocabulary` (or None) to `directory`; returns its path."""
    directory = pathlib.Path(directory)
    if vocabulary is not None:
        vocab_rows = int(vocabulary.vocab_size)
        if model.config.vocab_size < vocab_rows:
            raise CheckpointError(
                f"cannot save to {directory}: the vocabulary has {vocab_rows} ids but the model's "
                f"embedding has only {model.config.vocab_size} rows"
            )
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
    try:
        _write_into(model, vocabulary, staging)
        if not directory.exists():
            os.rename(staging, directory)
            return directory
        if not directory.is_dir():
            raise CheckpointError(f"cannot save to {directory}: it exists and is not a directory")
        names = sorted(p.name for p in staging.iterdir())
        names.remove(MODEL_CONFIG_FILE)
        for name in names + [MODEL_CONFIG_FILE]:  # config last: it marks the set complete
            os.replace(staging / name, directory / name)
        return directory
    finally:
        shutil.rmtree(staging, ignore_errors=True)


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
    if not (directory / "spiece.model").is_file():
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
