"""Postprocessors: decoded model output (or a target) -> what the task's metrics consume.

A task's ``postprocess_fn`` is called as ``fn(text, example=None, is_target=False)`` (seqio's
convention): ``text`` is a decoded prediction, or with ``is_target=True`` the target text of
``example`` (a dict of the example's features as Python values, e.g. ``answers`` for QA). The
evaluator applies it to both sides and passes the results to every ``metric_fns`` entry as
``metric(targets, predictions)``.

Bytes are accepted and decoded as UTF-8, because values read back from a ``tf.data`` pipeline
are ``bytes``. In the data layer because tasks name them (``postprocess_fn``);
``t5pre.evaluation.postprocessors`` is the same module under its old, public name.
"""

from __future__ import annotations

from typing import List, Mapping, Optional, Union

from t5pre.data.metrics import split_sentences_for_rouge_lsum

Text = Union[str, bytes]


def _to_str(value) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if hasattr(value, "numpy"):  # an eager tf.Tensor
        return _to_str(value.numpy())
    if hasattr(value, "item") and not isinstance(value, str):  # a NumPy scalar
        return _to_str(value.item())
    return str(value)


def strip_text(text: Text, example: Optional[Mapping] = None, is_target: bool = False) -> str:
    """The text without surrounding whitespace: the generic postprocessor."""
    return _to_str(text).strip()


def summarization_postprocessor(text: Text, example: Optional[Mapping] = None, is_target: bool = False) -> str:
    """Strips, collapses runs of spaces, and puts sentences on their own lines for ROUGE-Lsum.

    T5's CNN/DailyMail convention turns every `` . `` into `` .\\n`` so that ROUGE-Lsum sees one
    sentence per line; it changes nothing for ROUGE-1/2/L. Applied identically to predictions and
    targets, so they are compared on the same footing.
    """
    lines = [" ".join(line.split()) for line in _to_str(text).strip().splitlines()]
    return split_sentences_for_rouge_lsum("\n".join(line for line in lines if line))


def qa_postprocessor(
    text: Text, example: Optional[Mapping] = None, is_target: bool = False
) -> Union[str, List[str]]:
    """QA: a prediction is stripped; a target becomes the list of *all* gold answers.

    Training uses only the first answer as the target text, but SQuAD scores a prediction against
    every gold answer, so for targets the non-empty entries of the ``answers`` feature of
    ``example`` are returned (falling back to the target text alone when there are none).
    """
    if not is_target:
        return _to_str(text).strip()
    answers = None if example is None else example.get("answers")
    if answers is None:
        return [_to_str(text).strip()]
    if hasattr(answers, "numpy"):
        answers = answers.numpy()
    # Empty strings are dropped: they are the padding ``padded_batch`` adds to shorter answer
    # lists, and an empty "gold answer" would give an empty prediction a perfect exact match.
    answers = [_to_str(answer).strip() for answer in list(answers)]
    answers = [answer for answer in answers if answer]
    return answers or [_to_str(text).strip()]
