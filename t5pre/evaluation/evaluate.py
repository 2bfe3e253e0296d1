"""Score a model on a downstream task: decode a split, postprocess, apply the task's metrics.

This is the back end of ``t5pre evaluate`` and of the periodic evaluation inside
``t5pre finetune`` (which keeps the best checkpoint by the task's main metric).

What is decoded is what the model was trained on: the task's own pipeline (source,
preprocessors, tokenisation, trimming to ``sequence_length``) gives the encoder ids, so an
evaluation never re-tokenises text in a way training did not. The raw text
(``inputs_pretokenized`` / ``targets_pretokenized``) goes to the predictions file and, through the
task's ``postprocess_fn(text, example=..., is_target=...)``, to every ``metric_fns`` entry as
``metric(targets, predictions)`` (seqio's convention). Each predictions row keeps both the raw and
the postprocessed ("scored") texts, so the scores can be recomputed from the file alone.

Decoding is batched and cached (:func:`t5pre.models.decoding.decode`: the encoder runs once, the
decoder keeps a key/value cache), compiled once per model and setting
(:func:`t5pre.models.decoding.compile_decoder`, the same function `t5pre predict` uses), with
one :class:`~t5pre.models.decode_settings.DecodeSettings`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Optional

from t5pre.errors import ConfigError, DataError
from t5pre.models.decode_settings import DecodeSettings
from t5pre.training.actions import main_metric_name

DEFAULT_EVAL_BATCH_SIZE = 32


#: Raw example fields that are not model inputs but may matter for scoring (kept in the rows).
_TOKEN_FEATURES = ("inputs", "targets")


# ------------------------------------------------------------------------------ aliases
# The vocabulary checks and the --task lookup are data concerns: t5pre.data.task_vocabulary and
# t5pre.data.registry own them.



# ------------------------------------------------------------------------------ examples
def _text(value) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _jsonable(value):
    """numpy/bytes example values -> JSON values (None when not representable as text/numbers)."""
    import numpy as np

    if isinstance(value, bytes):
        return _text(value)
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "SO":
            return [_jsonable(v) for v in value.tolist()]
        if value.ndim == 0:
            return value.item()
        return None  # token ids and other arrays: not useful in a predictions file
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (str, int, float, bool, list)):
        return value
    return None


def load_examples(task, split: str, sequence_length: dict, max_examples: Optional[int] = None):
    """The first ``max_examples`` examples of ``split`` in order (numpy values, raw text kept)."""
    task.check_split(split)
    dataset = task.get_dataset(sequence_length=dict(sequence_length), split=split, shuffle=False,
                               seed=0, num_epochs=1)
    if max_examples is not None:
        dataset = dataset.take(int(max_examples))
    examples = list(dataset.as_numpy_iterator())
    if not examples:
        raise DataError(f"task {task.name!r}: split {split!r} yielded no examples to evaluate")
    for i, ex in enumerate(examples):
        for key in ("inputs", "targets_pretokenized", "inputs_pretokenized"):
            if key not in ex:
                raise DataError(f"task {task.name!r}: example {i} of split {split!r} has no "
                                f"{key!r} feature; evaluation needs the token ids and the raw "
                                "text (the task's tokenize preprocessor keeps it)")
    return examples


# ------------------------------------------------------------------------------ decoding
def decode_examples(model, vocabulary, examples, settings: DecodeSettings,
                    batch_size: int = DEFAULT_EVAL_BATCH_SIZE, progress: bool = False) -> list:
    """Decoded prediction text for every example, in order: the examples' own encoder ids
    (from the task's pipeline), batches padded to their longest row. ``progress`` shows a Keras
    ``Progbar`` with the ETA (updated in place on a terminal, one closing line otherwise)."""
    from t5pre.models.decoding import compile_decoder
    from t5pre.models.preprocessing import Seq2SeqPreprocessor

    run = compile_decoder(model, settings)
    preprocessor = Seq2SeqPreprocessor(vocabulary, settings.max_input_length)
    bar = None
    if progress and examples:
        import sys

        import keras

        bar = keras.utils.Progbar(len(examples), unit_name="example",
                                  verbose=1 if sys.stdout.isatty() else 2)
    predictions = []
    for start in range(0, len(examples), batch_size):
        rows = [ex["inputs"] for ex in examples[start:start + batch_size]]
        tokens, _ = run(*preprocessor.pad_batch(rows))
        predictions.extend(preprocessor.decode(tokens))
        if bar is not None:
            bar.update(len(predictions))
    return predictions


# ------------------------------------------------------------------------------ scoring
@dataclasses.dataclass
class EvalResult:
    task: str
    split: str
    scores: dict
    rows: list  # one dict per example: input, target, prediction, scored_target, scored_prediction
    main_metric: Optional[str]
    seconds: float

    @property
    def main_score(self) -> Optional[float]:
        return None if self.main_metric is None else self.scores[self.main_metric]


def score_rows(task, rows) -> dict:
    """Every ``metric_fns`` entry applied to the rows' scored targets and predictions."""
    targets = [row["scored_target"] for row in rows]
    predictions = [row["scored_prediction"] for row in rows]
    scores = {}
    for fn in task.metric_fns:
        name = getattr(fn, "__name__", repr(fn))
        result = fn(targets, predictions)
        if not isinstance(result, dict):
            raise DataError(f"task {task.name!r}: metric {name} returned {type(result).__name__}, "
                            "expected a dict of scores")
        for key, value in result.items():
            if key in scores:
                raise DataError(f"task {task.name!r}: two metrics both report {key!r}")
            scores[key] = float(value)
    return scores


def make_rows(task, examples, predictions) -> list:
    rows = []
    for i, (ex, prediction) in enumerate(zip(examples, predictions)):
        target = _text(ex["targets_pretokenized"])
        row = {"index": i, "input": _text(ex["inputs_pretokenized"]), "target": target,
               "prediction": prediction}
        for key, value in ex.items():
            if key in _TOKEN_FEATURES or key.endswith("_pretokenized") or key in row:
                continue
            value = _jsonable(value)
            if value is not None:
                row[key] = value
        row["scored_target"] = _jsonable(task.postprocess(target, example=ex, is_target=True))
        row["scored_prediction"] = _jsonable(task.postprocess(prediction, example=ex,
                                                               is_target=False))
        rows.append(row)
    return rows


class TaskEvaluator:
    """Decodes a fixed set of a task's examples and scores them; reusable across checkpoints.

    The examples are read once (the first ``max_examples`` of ``split``, in order) so periodic
    evaluation during fine-tuning compares every checkpoint on the same inputs."""

    def __init__(self, task, vocabulary, *, split: str = "validation",
                 sequence_length: dict, max_examples: Optional[int] = None,
                 settings: Optional[DecodeSettings] = None,
                 batch_size: int = DEFAULT_EVAL_BATCH_SIZE, metric: Optional[str] = None):
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ConfigError(f"--batch-size must be an integer >= 1, got {batch_size!r}")
        self.task = task
        self.vocabulary = vocabulary
        self.split = split
        self.sequence_length = dict(sequence_length)
        self.max_examples = max_examples
        # Unset lengths: the task's sequence lengths (what the examples were trimmed to).
        self.settings = (settings or DecodeSettings()).validate().resolved_for(self.sequence_length)
        self.batch_size = batch_size
        self.metric = metric
        self._examples = None

    @property
    def examples(self) -> list:
        if self._examples is None:
            self._examples = load_examples(self.task, self.split, self.sequence_length,
                                           self.max_examples)
        return self._examples

    def evaluate(self, model, progress: bool = False) -> EvalResult:
        start = time.perf_counter()
        examples = self.examples
        predictions = decode_examples(model, self.vocabulary, examples, self.settings,
                                      self.batch_size, progress=progress)
        rows = make_rows(self.task, examples, predictions)
        scores = score_rows(self.task, rows)
        main = main_metric_name(scores, self.metric) if scores else None
        return EvalResult(self.task.name, self.split, scores, rows, main,
                          time.perf_counter() - start)


# ------------------------------------------------------------------------------ files
def write_results(result: EvalResult, out_json: str, predictions_path: Optional[str] = None,
                  extra: Optional[dict] = None) -> tuple[str, str]:
    """Writes the scores JSON and the predictions JSONL (each atomically); returns both paths."""
    out_json = os.fspath(out_json)
    if predictions_path is None:
        predictions_path = predictions_path_for(out_json)
    for path in (out_json, predictions_path):
        parent = os.path.dirname(os.path.abspath(path))
        os.makedirs(parent, exist_ok=True)
    _atomic_write(predictions_path,
                  "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in result.rows))
    summary = {"task": result.task, "split": result.split, "num_examples": len(result.rows),
               "main_metric": result.main_metric, "scores": result.scores,
               "predictions_file": os.path.abspath(predictions_path),
               "seconds": round(result.seconds, 3), **(extra or {})}
    _atomic_write(out_json, json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    return out_json, predictions_path


def predictions_path_for(out_json: str) -> str:
    """Where the predictions go by default: ``FILE.json`` -> ``FILE.predictions.jsonl``."""
    out_json = os.fspath(out_json)
    stem = out_json[:-5] if out_json.endswith(".json") else out_json
    return stem + ".predictions.jsonl"


def read_predictions(path) -> list:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _atomic_write(path: str, text: str) -> None:
    from t5pre.files import atomic_write_text

    atomic_write_text(path, text)


def format_scores(scores: dict, main_metric: Optional[str] = None) -> str:
    """A two-column table: ``metric  score  [low, high]`` (interval bounds folded in)."""
    names = [k for k in scores if not k.endswith(("_low", "_high"))]
    if not names:
        return "(no scores: the task has no metric_fns)"
    width = max(len(n) for n in [*names, "metric"]) + 2  # QA's "em"/"f1" are shorter
    lines = [f"{'metric'.ljust(width)}{'score':>8}"]
    for name in names:
        line = f"{name.ljust(width)}{scores[name]:8.3f}"
        if f"{name}_low" in scores and f"{name}_high" in scores:
            line += f"   [{scores[name + '_low']:.3f}, {scores[name + '_high']:.3f}]"
        if name == main_metric:
            line += "   <- main"
        lines.append(line)
    return "\n".join(lines)
