"""Write a serving SavedModel atomically: all of it at the target path, or nothing.

The export is assembled in a sibling directory (`NAME_temp-XXXX` next to the target, so the
final rename stays on one filesystem; `t5pre.files.atomic_directory`) and renamed into place
only after the SavedModel and its metadata are complete. Any failure (an exception while tracing or saving, a full disk,
Ctrl-C) removes the staging directory, and the target is untouched: a reader such as TensorFlow
Serving, which polls a model base path for new version directories, never sees half an export.

An existing export is refused unless `overwrite=True`; then the old directory is moved aside,
the new one renamed in, and the old one deleted (an old export survives a failed overwrite).

Besides the SavedModel the export holds `assets.extra/t5pre_export.json` (the decode settings,
the model directory and checkpoint it came from, vocabulary size, signatures), a file TensorFlow
Serving ignores.
"""

from __future__ import annotations

import json
import pathlib

from t5pre.errors import CheckpointError, ConfigError
from t5pre.files import atomic_directory, check_target  # noqa: F401  (check_target: the CLI's)

METADATA_DIR = "assets.extra"
METADATA_FILE = "t5pre_export.json"


def _write_saved_model(model, vocabulary, settings, path: str) -> None:
    """Build the serving module, trace its signatures and save it into `path` (an existing
    empty directory). Kept as one seam: tests replace it to inject a failure mid-export."""
    import tensorflow as tf

    from t5pre.export.serving import build_serving_module, signatures

    module = build_serving_module(model, vocabulary, settings)
    tf.saved_model.save(module, path, signatures=signatures(module))


def _write_metadata(path: pathlib.Path, metadata: dict) -> None:
    target = path / METADATA_DIR
    target.mkdir(exist_ok=True)
    (target / METADATA_FILE).write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")


def export_saved_model(model, vocabulary, export_dir, settings, *, overwrite: bool = False,
                       metadata: dict | None = None) -> pathlib.Path:
    """Export `model` + `vocabulary` as a strings-in/strings-out SavedModel at `export_dir`.

    `settings`: a resolved `DecodeSettings` (beam, length penalty, max lengths). `metadata`
    entries are added to `assets.extra/t5pre_export.json`. Returns the export path.
    """
    import keras

    from t5pre.export.serving import IDS_SIGNATURE, SERVING_SIGNATURE

    if keras.backend.backend() != "tensorflow":
        raise ConfigError(
            f"export writes a TensorFlow SavedModel and needs KERAS_BACKEND=tensorflow "
            f"(the backend is {keras.backend.backend()!r})")
    settings.validate()
    if settings.max_input_length is None or settings.max_decode_length is None:
        raise ConfigError("export needs max_input_length and max_decode_length set")
    export_dir = check_target(export_dir, overwrite)
    written = False
    try:
        with atomic_directory(export_dir, replace=True,  # check_target refuses it first
                              # again: another process may have created the target meanwhile
                              before_rename=lambda: check_target(export_dir, overwrite)) as staging:
            _write_saved_model(model, vocabulary, settings, str(staging))
            _write_metadata(staging, {
                "format": "t5pre-serving-saved-model",
                "format_version": 1,
                "signatures": {
                    SERVING_SIGNATURE: {"inputs": "string[batch]",
                                        "outputs": {"outputs": "string[batch]",
                                                    "scores": "float32[batch]"}},
                    IDS_SIGNATURE: {"inputs": "string[batch]",
                                    "outputs": {"ids": "int32[batch, max_decode_length]",
                                                "scores": "float32[batch]",
                                                "lengths": "int32[batch]"}},
                },
                "decoding": {
                    "method": settings.method,
                    "beam": settings.beam_size,
                    "length_penalty": settings.length_penalty if settings.method == "beam" else None,
                    "max_input_length": settings.max_input_length,
                    "max_decode_length": settings.max_decode_length,
                    "xla": settings.xla,
                },
                "vocabulary": {"vocab_size": int(vocabulary.vocab_size),
                               "extra_ids": int(vocabulary.extra_ids),
                               "pad_id": int(vocabulary.pad_id), "eos_id": int(vocabulary.eos_id)},
                "model": model.config.to_dict(),
                **(metadata or {}),
            })
            written = True
    except OSError as e:
        if not written:
            raise
        raise CheckpointError(f"{export_dir}: cannot move the finished export into place "
                              f"({e})") from None
    return export_dir


def read_export_metadata(export_dir) -> dict:
    """The `t5pre_export.json` of an export (CheckpointError when it is not a t5pre export)."""
    path = pathlib.Path(export_dir) / METADATA_DIR / METADATA_FILE
    if not path.is_file():
        raise CheckpointError(f"{export_dir}: not a t5pre export ({METADATA_DIR}/{METADATA_FILE} "
                              "is missing)")
    return json.loads(path.read_text())
