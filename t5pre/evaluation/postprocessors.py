"""Postprocessors (decoded text -> what metrics consume): :mod:`t5pre.data.postprocessors`, under
its public name (tasks name them in ``postprocess_fn``, and data never imports evaluation)."""

from t5pre.data.postprocessors import (  # noqa: F401
    qa_postprocessor, strip_text, summarization_postprocessor)
