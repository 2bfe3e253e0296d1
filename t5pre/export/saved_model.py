"""Write a serving SavedModel atomically: all of it at the target path, or nothing.

The export is assembled in a hidden sibling directory (`.NAME.tmp-XXXX` next to the target, so
the final rename stays on one filesystem) and renamed into place only after the SavedModel and
its metadata are complete. Any failure (an exception while tracing or saving, a full disk,
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
import os
import pathlib
import shutil
import tempfile

from t5pre.errors import CheckpointError, ConfigError

METADATA_DIR = "assets.extra"
METADATA_FILE = "t5pre_export.json"


def _write_saved_model(model, vocabulary, settings, path: str) -> None:
    """Build the serving module, trace its signatures and save it into `path` (an existing
    empty directory). Kept as one seam: tests replace it to inject a failure mid-export."""
    import tensorflow as tf

    from t5pre.export.serving import build_serving_module, signatures

    module = build_serving_module(model, vocabulary, settings)
    tf.saved_model.save(module, path, signatures=signatures(module))


def _give_usual_mode(path: pathlib.Path) -> None:
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o777 & ~umask)


def _write_metadata(path: pathlib.Path, metadata: dict) -> None:
    target = path / METADATA_DIR
    target.mkdir(exist_ok=True)
    (target / METADATA_FILE).write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")


def check_target(export_dir, overwrite: bool, flag: str | None = None) -> pathlib.Path:
    """Refuse an existing non-empty target unless `overwrite`, a target that is not a directory,
    and a place that cannot be written (:func:`t5pre.files.check_output_path`; `flag`, e.g.
    ``--out``, is how messages name the path)."""
    from t5pre.files import check_output_path

    check_output_path(export_dir, flag=flag, directory=True, overwrite=bool(overwrite))
    return pathlib.Path(export_dir)


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
    parent = export_dir.parent
    parent.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{export_dir.name}.tmp-", dir=parent))
    _give_usual_mode(staging)  # mkdtemp makes 0700; a server running as another user must read it
    retired = None
    try:
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
            },
            "vocabulary": {"vocab_size": int(vocabulary.vocab_size),
                           "extra_ids": int(vocabulary.extra_ids),
                           "pad_id": int(vocabulary.pad_id), "eos_id": int(vocabulary.eos_id)},
            "model": model.config.to_dict(),
            **(metadata or {}),
        })
        # Re-check just before the rename: another process may have created the target.
        check_target(export_dir, overwrite)
        if export_dir.exists():
            retired = pathlib.Path(tempfile.mkdtemp(prefix=f".{export_dir.name}.old-", dir=parent))
            os.rename(export_dir, retired / "export")
        try:
            os.rename(staging, export_dir)
        except OSError as e:
            if retired is not None:  # put the old export back
                os.rename(retired / "export", export_dir)
            raise CheckpointError(f"{export_dir}: cannot move the finished export into place "
                                  f"({e})") from None
        return export_dir
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if retired is not None:
            shutil.rmtree(retired, ignore_errors=True)


def read_export_metadata(export_dir) -> dict:
    """The `t5pre_export.json` of an export (CheckpointError when it is not a t5pre export)."""
    path = pathlib.Path(export_dir) / METADATA_DIR / METADATA_FILE
    if not path.is_file():
        raise CheckpointError(f"{export_dir}: not a t5pre export ({METADATA_DIR}/{METADATA_FILE} "
                              "is missing)")
    return json.loads(path.read_text())
