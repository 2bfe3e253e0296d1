"""t5pre.export: a TensorFlow SavedModel that takes raw strings and returns generated strings.

`export_saved_model(model, vocabulary, export_dir, settings)` writes it atomically; the graph
(tokenizer, encoder, cached greedy / beam-search loop, detokenizer) is built in
`t5pre.export.serving`. `t5pre export` is the command-line front end.
"""

from t5pre.lazy import lazy_exports

_EXPORTS = dict.fromkeys(["export_saved_model", "read_export_metadata", "METADATA_DIR",
                          "METADATA_FILE"], "t5pre.export.saved_model")

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
