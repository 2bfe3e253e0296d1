"""Evaluation of generated text: metrics and the postprocessors that prepare text for them.

* :mod:`t5pre.evaluation.metrics`         ROUGE (with bootstrap intervals) and SQuAD EM / F1,
  each ``fn(targets, predictions) -> {name: score x100}``
* :mod:`t5pre.evaluation.postprocessors`  decoded text -> what the metrics consume, per task kind
"""

from t5pre.evaluation.metrics import METRICS, exact_match, get_metric, rouge, squad  # noqa: F401
