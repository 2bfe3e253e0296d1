"""Decoded evaluation during training: an action of the one Trainer (fine-tuning uses it).

Every evaluation decodes the same first ``finetune.eval_examples`` validation examples
(:class:`~t5pre.evaluation.evaluate.TaskEvaluator`), scores them with the task's metric_fns and
returns the scores, which the Trainer writes to ``DIR/logs/eval`` beside the token loss and
hands to the actions after this one (the :class:`~t5pre.training.actions.BestCheckpoint`).
"""

from __future__ import annotations

from t5pre.training.actions import Action


class DecodeEvaluation(Action):
    """Decodes and scores with ``evaluator`` at each evaluation; keeps ``history``."""

    def __init__(self, evaluator):
        self.evaluator = evaluator
        self.history = []  # (step, scores) of every decoded evaluation

    def on_eval(self, trainer, step, metrics, writer):
        result = self.evaluator.evaluate(trainer.model)
        self.history.append((step, dict(result.scores)))
        scores = {k: v for k, v in result.scores.items() if not k.endswith(("_low", "_high"))}
        scores["decode_seconds"] = result.seconds
        return scores
