"""The text metrics (ROUGE, SQuAD EM / F1): :mod:`t5pre.data.metrics`, under its public name.

They live in the data layer because tasks name them in ``metric_fns``, and data never imports
evaluation; this module is kept so that ``t5pre.evaluation.metrics.rouge`` keeps working."""

from t5pre.data.metrics import (  # noqa: F401
    DEFAULT_ROUGE_KEYS, METRICS, exact_match, get_metric, normalize_squad_answer, rouge,
    split_sentences_for_rouge_lsum, squad)
