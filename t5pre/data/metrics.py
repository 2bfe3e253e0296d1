"""Text metrics for evaluating generated outputs: ROUGE and SQuAD exact match / F1.

Every metric has the seqio-style signature ``fn(targets, predictions) -> {name: score}``:

* ``targets`` holds one entry per example, either a reference string or a list of reference
  strings (several gold answers / summaries; the best-matching one counts, as in T5);
* ``predictions`` holds one decoded string per example (``bytes`` are decoded as UTF-8);
* scores are percentages (x100), the scale T5 and the papers report.

The metrics work on plain Python strings, so they run on whatever the decoder produced after the
task's ``postprocess_fn`` (see :mod:`t5pre.data.postprocessors`); they need neither
TensorFlow nor a model. They live in the data layer because tasks name them (``metric_fns``);
``t5pre.evaluation.metrics`` is the same module under its old, public name.
"""

from __future__ import annotations

import collections
import contextlib
import re
import string
from typing import Dict, Iterator, List, Sequence, Union

import numpy as np

from t5pre.errors import DataError

Targets = Sequence[Union[str, Sequence[str]]]

#: The ROUGE variants T5 reports for summarization, plus plain ROUGE-L (no sentence splitting).
DEFAULT_ROUGE_KEYS = ("rouge1", "rouge2", "rougeL", "rougeLsum")


# ---------------------------------------------------------------------------------------------
# Shared input checks
# ---------------------------------------------------------------------------------------------


def _as_reference_lists(targets: Targets, predictions: Sequence[str], metric: str) -> List[List[str]]:
    """Turns ``targets`` into one non-empty list of reference strings per prediction.

    A single string becomes a one-element list. A mismatch in counts is a user error (usually a
    truncated prediction file), so it is reported as a DataError rather than silently zipped away.
    """
    if isinstance(targets, str) or isinstance(predictions, str):
        raise DataError(f"{metric}: targets and predictions must be lists of strings, not a string")
    if len(targets) != len(predictions):
        raise DataError(
            f"{metric}: got {len(targets)} targets but {len(predictions)} predictions; "
            "they must pair up one to one"
        )
    references = []
    for index, (target, prediction) in enumerate(zip(targets, predictions)):
        if not isinstance(prediction, (str, bytes)):
            raise DataError(f"{metric}: prediction {index} is {type(prediction).__name__}, not a string")
        refs = [target] if isinstance(target, (str, bytes)) else list(target)
        if not refs:
            raise DataError(f"{metric}: example {index} has an empty list of references")
        for ref in refs:
            if not isinstance(ref, (str, bytes)):
                raise DataError(f"{metric}: a reference of example {index} is {type(ref).__name__}, not a string")
        references.append([_as_str(ref) for ref in refs])
    return references


def _as_str(text) -> str:
    """Text as ``str``: ``bytes`` (what ``tf.data`` hands back) are decoded as UTF-8."""
    return text.decode("utf-8", errors="replace") if isinstance(text, bytes) else text


def _as_str_list(predictions: Sequence) -> List[str]:
    return [_as_str(prediction) for prediction in predictions]


# ---------------------------------------------------------------------------------------------
# ROUGE
# ---------------------------------------------------------------------------------------------


def split_sentences_for_rouge_lsum(text: str) -> str:
    """Puts each sentence on its own line, T5's convention before ROUGE-Lsum.

    ROUGE-Lsum computes a summary-level LCS over sentences that it expects one per line. CNN/DM
    highlights and T5's outputs separate sentences with `` . `` (tokenised text), so T5 turns every
    `` . `` into `` .\\n``. The transformation is idempotent and leaves ROUGE-1/2/L unchanged (the
    ROUGE tokenizer ignores newlines).
    """
    return text.replace(" . ", " .\n")


@contextlib.contextmanager
def _seeded_global_numpy(seed: int) -> Iterator[None]:
    """Seeds NumPy's global generator for the block, then restores the caller's state.

    ``rouge_score.scoring.BootstrapAggregator`` resamples with ``np.random.choice`` on the global
    generator; seeding it here makes the confidence interval reproducible without leaving side
    effects on anyone else's random stream.
    """
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def rouge(
    targets: Targets,
    predictions: Sequence[str],
    score_keys: Sequence[str] = DEFAULT_ROUGE_KEYS,
    *,
    use_stemmer: bool = True,
    split_sentences: bool = True,
    bootstrap_samples: int = 1000,
    confidence_interval: float = 0.95,
    seed: int = 0,
) -> Dict[str, float]:
    """ROUGE F-measures x100, averaged over examples, with bootstrap confidence intervals.

    Returns ``{key: mid, key + "_low": low, key + "_high": high}`` for every key in
    ``score_keys`` (``rouge1``, ``rouge2``, ``rougeL``, ``rougeLsum``). Following T5, the
    per-example scores go through ``rouge_score``'s ``BootstrapAggregator``: ``bootstrap_samples``
    resamples of the examples, each giving a mean; ``mid`` is the median of those means (the
    number T5 reports; it equals the plain mean up to resampling noise), ``low`` / ``high`` bound
    their central ``confidence_interval``. The resampling is reproducible for a fixed ``seed``.

    T5's settings: Porter stemming on; for ROUGE-Lsum, ``split_sentences`` first applies
    :func:`split_sentences_for_rouge_lsum` to references and predictions. With several
    references per example the best one (highest F-measure, per key) counts.

    The ``rouge_score`` tokenizer keeps only ``[a-z0-9]`` after lower-casing, so text in other
    scripts scores 0; empty predictions or references score 0.
    """
    from rouge_score import rouge_scorer, scoring

    references = _as_reference_lists(targets, predictions, "rouge")
    predictions = _as_str_list(predictions)
    if not predictions:
        raise DataError("rouge: no examples to score")
    unknown = [key for key in score_keys if not re.fullmatch(r"rouge([1-9]|L|Lsum)", key)]
    if unknown:
        raise DataError(f"rouge: unknown score keys {unknown}; use rouge1..rouge9, rougeL, rougeLsum")

    scorer = rouge_scorer.RougeScorer(list(score_keys), use_stemmer=use_stemmer)
    aggregator = scoring.BootstrapAggregator(
        confidence_interval=confidence_interval, n_samples=bootstrap_samples
    )
    for refs, prediction in zip(references, predictions):
        if split_sentences:
            refs = [split_sentences_for_rouge_lsum(ref) for ref in refs]
            prediction = split_sentences_for_rouge_lsum(prediction)
        aggregator.add_scores(scorer.score_multi(refs, prediction))

    with _seeded_global_numpy(seed):
        aggregate = aggregator.aggregate()

    result = {}
    for key in score_keys:
        interval = aggregate[key]
        result[key] = 100.0 * float(interval.mid.fmeasure)
        result[f"{key}_low"] = 100.0 * float(interval.low.fmeasure)
        result[f"{key}_high"] = 100.0 * float(interval.high.fmeasure)
    return result


# ---------------------------------------------------------------------------------------------
# SQuAD v1.1 exact match and F1
# ---------------------------------------------------------------------------------------------

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_squad_answer(text: str) -> str:
    """SQuAD v1.1's answer normalisation.

    Lower-case, delete ASCII punctuation, delete the articles *a*, *an*, *the* as whole words,
    and collapse runs of whitespace to single spaces. The order matters and follows the official
    evaluation: punctuation goes before articles are matched ("the-end" -> "theend" keeps its
    letters), and articles leave gaps that the whitespace step closes.
    """
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _exact_match(reference: str, prediction: str) -> float:
    return float(normalize_squad_answer(reference) == normalize_squad_answer(prediction))


def _token_f1(reference: str, prediction: str) -> float:
    """Bag-of-tokens F1 of two normalised answers.

    As in SQuAD v1.1, no overlap (including two answers that normalise to nothing) gives 0.
    """
    reference_tokens = normalize_squad_answer(reference).split()
    prediction_tokens = normalize_squad_answer(prediction).split()
    overlap = collections.Counter(reference_tokens) & collections.Counter(prediction_tokens)
    shared = sum(overlap.values())
    if shared == 0:
        return 0.0
    precision = shared / len(prediction_tokens)
    recall = shared / len(reference_tokens)
    return 2.0 * precision * recall / (precision + recall)


def squad(targets: Targets, predictions: Sequence[str]) -> Dict[str, float]:
    """SQuAD v1.1 exact match and token F1, x100: ``{"em": ..., "f1": ...}``.

    For each example the prediction is compared with every gold answer and the best exact match
    and the best F1 are kept (independently); the per-example values are averaged over examples.
    """
    references = _as_reference_lists(targets, predictions, "squad")
    predictions = _as_str_list(predictions)
    if not predictions:
        raise DataError("squad: no examples to score")
    em_total = 0.0
    f1_total = 0.0
    for refs, prediction in zip(references, predictions):
        em_total += max(_exact_match(ref, prediction) for ref in refs)
        f1_total += max(_token_f1(ref, prediction) for ref in refs)
    count = len(predictions)
    return {"em": 100.0 * em_total / count, "f1": 100.0 * f1_total / count}


def exact_match(targets: Targets, predictions: Sequence[str]) -> Dict[str, float]:
    """Share of predictions equal to one of their references, verbatim (no normalisation), x100."""
    references = _as_reference_lists(targets, predictions, "exact_match")
    predictions = _as_str_list(predictions)
    if not predictions:
        raise DataError("exact_match: no examples to score")
    hits = sum(prediction in refs for refs, prediction in zip(references, predictions))
    return {"exact_match": 100.0 * hits / len(predictions)}


#: Metric functions by name, for configs and the command line (``--metrics rouge,squad``).
METRICS = {"rouge": rouge, "squad": squad, "exact_match": exact_match}


def get_metric(name: str):
    """The metric function called ``name``; a DataError lists the known ones."""
    try:
        return METRICS[name]
    except KeyError:
        raise DataError(f"unknown metric {name!r}; known metrics: {', '.join(sorted(METRICS))}") from None
