"""Evaluation of generated text: metrics and the postprocessors that prepare text for them.

* :mod:`t5pre.evaluation.metrics`         ROUGE (with bootstrap intervals) and SQuAD EM / F1,
  each ``fn(targets, predictions) -> {name: score x100}``
* :mod:`t5pre.evaluation.postprocessors`  decoded text -> what the metrics consume, per task kind
* :mod:`t5pre.evaluation.evaluate`        ``TaskEvaluator``: decode a task's split and score it
* :mod:`t5pre.evaluation.periodic`        ``DecodeEvaluation``: the Trainer action that decodes
  and scores during fine-tuning
* :mod:`t5pre.evaluation.predict`         ``Predictor``, ``predict_texts``: strings in, strings out
"""

from t5pre.lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(["METRICS", "exact_match", "get_metric", "rouge", "squad"],
                    "t5pre.evaluation.metrics"),
    **dict.fromkeys(["EvalResult", "TaskEvaluator"], "t5pre.evaluation.evaluate"),
    "DecodeEvaluation": "t5pre.evaluation.periodic",
    **dict.fromkeys(["Predictor", "predict_texts"], "t5pre.evaluation.predict"),
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
