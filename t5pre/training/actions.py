"""What the Trainer does at each evaluation besides the token loss: a list of actions.

Pretraining and fine-tuning are the same :class:`~t5pre.training.trainer.Trainer`; they differ
in their init source and in their actions (t5x runs fine-tuning as the same ``train`` with a
restore config and ``BaseAction``s). At every evaluation the Trainer computes the token
loss/accuracy of the eval split, then calls each action in order with the metrics so far; an
action may return more metrics (written to ``DIR/logs/eval`` with the rest) and may write to the
model directory.

* :class:`TextSamples` -- a table of a few eval examples (input, target, teacher-forced argmax)
  in TensorBoard's Text tab (``training.text_samples``).
* :class:`BestCheckpoint` -- keeps ``DIR/best/`` = the model with the best score so far.
* ``t5pre.evaluation.evaluate.DecodeEvaluation`` -- decodes the validation split and scores it
  with the task's metrics (fine-tuning); it lives in the evaluation layer, above this one.
"""

from __future__ import annotations

import os
import shutil
from typing import Optional

from t5pre.errors import ConfigError
from t5pre.files import atomic_directory, atomic_write_json
from t5pre.models.layout import BEST_DIR, BEST_INFO_FILE  # noqa: F401
from t5pre.models.store import read_json_info

#: The score that ranks checkpoints when none is configured: ROUGE-Lsum first for
#: summarization (T5 reports it with ROUGE-1/2; it moves earlier than ROUGE-2 for small models),
#: F1 for SQuAD, then exact match.
MAIN_METRIC_PREFERENCE = ("rougeLsum", "rouge2", "rougeL", "rouge1", "f1", "em", "exact_match")

#: Metrics the Trainer itself computes at each evaluation (never a downstream score).
TOKEN_METRICS = ("loss", "accuracy", "decode_seconds")


def main_metric_name(scores: dict, preferred: Optional[str] = None) -> Optional[str]:
    """The key of ``scores`` that ranks checkpoints: ``preferred`` if given, else the first of
    :data:`MAIN_METRIC_PREFERENCE` present, else the first key that is not an interval bound."""
    if preferred:
        if preferred not in scores:
            raise ConfigError(f"metric {preferred!r} is not among the task's scores "
                              f"({', '.join(sorted(scores)) or 'none'})")
        return preferred
    for key in MAIN_METRIC_PREFERENCE:
        if key in scores:
            return key
    plain = [k for k in scores if not k.endswith(("_low", "_high"))]
    return plain[0] if plain else None


class Action:
    """One thing done at every evaluation. Subclasses override what they need."""

    def on_start(self, trainer) -> None:
        """Called once the model is built and restored (or initialised), before the first step."""

    def on_eval(self, trainer, step: int, metrics: dict, writer) -> Optional[dict]:
        """Called at each evaluation with the metrics so far; returns metrics to add."""
        return None


class TextSamples(Action):
    """A markdown table of ``n`` eval examples in TensorBoard (chief only; never fatal)."""

    def __init__(self, n: int):
        self.n = n

    def on_eval(self, trainer, step, metrics, writer):
        if not trainer.is_chief or self.n <= 0:
            return None
        try:
            writer.text("eval", step, "samples", trainer.text_samples(self.n))
        except Exception as e:  # samples are a convenience; never stop training for them
            trainer.log(f"(text samples skipped: {type(e).__name__}: {e})")
        return None


class BestCheckpoint(Action):
    """Keeps ``DIR/best/`` = the model with the highest ``metric`` seen so far.

    The new best is written completely into a sibling directory (``save_pretrained`` layout +
    ``best.json``) and then swapped in with two renames (``t5pre.files.atomic_directory``), so
    ``best/`` always holds one complete model; a crash between the renames leaves
    ``best_old-*/old``, which the next start puts back. The best score survives restarts (read
    back from ``best/best.json``). The score is looked up among the metrics of the actions before this one (not the token loss)."""

    def __init__(self, model_dir: str, metric: Optional[str], *, info: Optional[dict] = None,
                 enabled: bool = True, log=None):
        self.model_dir = model_dir
        self.path = os.path.join(model_dir, BEST_DIR)
        self.metric = metric
        self.info = dict(info or {})
        self.enabled = enabled
        self.best_score = None
        self.best_step = None
        self._log = log
        if enabled:
            self._recover()
            stored = read_best_info(self.path)
            if stored and stored.get("metric") == metric or (stored and metric is None):
                self.metric = stored.get("metric")
                self.best_score = stored.get("score")
                self.best_step = stored.get("step")

    def _recover(self) -> None:
        """Tidies what a kill during a swap of best/ left: an old best/ moved aside
        (`best_old-*/old`, `.best-old-*` before) goes back when best/ is missing; an unfinished
        new one (`best_temp-*`, `.best-new-*`) is deleted."""
        if not os.path.isdir(self.model_dir):
            return
        for name in sorted(os.listdir(self.model_dir)):
            full = os.path.join(self.model_dir, name)
            if name.startswith(f"{BEST_DIR}_old-") or name.startswith(".best-old-"):
                old = os.path.join(full, "old") if name.startswith(BEST_DIR) else full
                if os.path.isdir(old) and not os.path.isdir(self.path):
                    os.rename(old, self.path)
                shutil.rmtree(full, ignore_errors=True)
            elif name.startswith(f"{BEST_DIR}_temp-") or name.startswith(".best-new-"):
                shutil.rmtree(full, ignore_errors=True)

    def on_eval(self, trainer, step, metrics, writer):
        scores = {k: v for k, v in metrics.items() if k not in TOKEN_METRICS}
        if self.update(step, scores, trainer.model, trainer.vocabulary):
            (self._log or trainer.log)(f"new best {self.metric} {self.best_score:.3f} at step "
                                       f"{step}: saved {self.path}")
        return None

    def update(self, step: int, scores: dict, model, vocabulary) -> bool:
        """Saves ``model`` as the new best when its score beats the kept one; returns whether."""
        if not self.enabled or not scores:
            return False
        self.metric = main_metric_name(scores, self.metric)
        if self.metric is None:
            return False
        score = float(scores[self.metric])
        if self.best_score is not None and not score > self.best_score:
            return False
        self._write(step, score, scores, model, vocabulary)
        self.best_score, self.best_step = score, step
        return True

    def _write(self, step, score, scores, model, vocabulary) -> None:
        from t5pre.models.io import write_pretrained

        info = {**self.info, "step": int(step), "metric": self.metric, "score": score,
                "scores": scores}
        with atomic_directory(self.path, replace=True) as staging:
            write_pretrained(model, vocabulary, staging)
            atomic_write_json(os.path.join(staging, BEST_INFO_FILE), info, fsync=False)


def read_best_info(path: str) -> Optional[dict]:
    """``best.json`` of a best/ directory (None when absent or unreadable)."""
    return read_json_info(path, BEST_INFO_FILE)
