"""t5pre.models: the T5 encoder-decoder (Keras 3), its loss, save/load, HF conversion, decoding.

We write our own compact T5 with `keras.ops` rather than use keras-hub 0.32's `T5Backbone`:
measured on this stack the latter trained at 0.69-0.72x HF PyTorch T5's tokens/s on CPU and has no
segment ids / positions for packed batches. See t5pre/models/t5.py.

Heavy imports (keras, tensorflow) happen on first attribute access, so importing the package for
`T5Config` alone stays cheap.
"""

from t5pre.lazy import lazy_exports

_EXPORTS = {
    "T5Config": "t5pre.models.config",
    "available_sizes": "t5pre.models.config",
    "T5Model": "t5pre.models.t5",
    "seq2seq_loss": "t5pre.models.losses",
    "save_pretrained": "t5pre.models.io",
    "load_pretrained": "t5pre.models.io",
    "from_hf": "t5pre.models.hf_convert",
    "generate": "t5pre.models.decoding",
    "compile_decoder": "t5pre.models.decoding",
    "DecodeSettings": "t5pre.models.decode_settings",
    "Seq2SeqPreprocessor": "t5pre.models.preprocessing",
    "load_model": "t5pre.models.store",
    "load_for_inference": "t5pre.models.store",
    "write_model_files": "t5pre.models.io",
    "parameter_counts": "t5pre.models.info",
    "training_flops_per_token": "t5pre.models.info",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
