"""Reading extractive-QA data in the official SQuAD JSON layout.

The layout (SQuAD v1.1, and what most QA datasets exported "in SQuAD format" follow)::

    {"version": "1.1",
     "data": [{"title": "...",
               "paragraphs": [{"context": "...",
                               "qas": [{"id": "...", "question": "...",
                                        "answers": [{"text": "...", "answer_start": 17}, ...]},
                                       ...]}]}]}

Every question becomes one example ``{"id", "title", "context", "question", "answers"}`` with
``answers`` the list of all gold answer texts (duplicates kept, in file order: the first one is the
training target, all of them count in evaluation, as in T5). The reader is pure Python so that a
malformed file fails with a :class:`~t5pre.errors.DataError` naming the file and the field,
before TensorFlow sees anything.
"""

from __future__ import annotations

import json
import os
from typing import Dict, Iterator, List, Sequence, Union

from t5pre.errors import DataError

SQUAD_FIELDS = ("id", "title", "context", "question", "answers")


def _require(container, key: str, kind, where: str, path: str):
    """``container[key]`` checked to be a ``kind``; a DataError names the file and the field."""
    if not isinstance(container, dict) or key not in container:
        raise DataError(f"{path}: {where} has no {key!r} field (expected the SQuAD JSON layout)")
    value = container[key]
    if not isinstance(value, kind):
        expected = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise DataError(f"{path}: {where}.{key} is {type(value).__name__}, expected {expected}")
    return value


def read_squad_json(path: Union[str, os.PathLike], require_answers: bool = True) -> Iterator[Dict]:
    """Yields one example dict per question of the SQuAD-format file at ``path``.

    ``require_answers=False`` accepts questions without answers (a test set to predict on); their
    ``answers`` is an empty list. Otherwise a question with no answer is a DataError, since it
    could be neither a target nor scored.
    """
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as handle:
            document = json.load(handle)
    except FileNotFoundError:
        raise DataError(f"SQuAD file not found: {path}") from None
    except json.JSONDecodeError as error:
        raise DataError(f"{path}: not valid JSON (line {error.lineno}, column {error.colno}: {error.msg})") from None
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None

    articles = _require(document, "data", list, "the top level", path)
    for a, article in enumerate(articles):
        where = f"data[{a}]"
        title = article.get("title", "") if isinstance(article, dict) else ""
        paragraphs = _require(article, "paragraphs", list, where, path)
        for p, paragraph in enumerate(paragraphs):
            where_p = f"{where}.paragraphs[{p}]"
            context = _require(paragraph, "context", str, where_p, path)
            questions = _require(paragraph, "qas", list, where_p, path)
            for q, qa in enumerate(questions):
                where_q = f"{where_p}.qas[{q}]"
                question = _require(qa, "question", str, where_q, path)
                raw_answers = qa.get("answers", []) if isinstance(qa, dict) else []
                if not isinstance(raw_answers, list):
                    raise DataError(f"{path}: {where_q}.answers is {type(raw_answers).__name__}, expected list")
                answers: List[str] = []
                for n, answer in enumerate(raw_answers):
                    answers.append(_require(answer, "text", str, f"{where_q}.answers[{n}]", path))
                if require_answers and not answers:
                    raise DataError(f"{path}: {where_q} (id {qa.get('id')!r}) has no answers")
                yield {
                    "id": str(qa.get("id", f"{a}-{p}-{q}")),
                    "title": str(title),
                    "context": context,
                    "question": question,
                    "answers": answers,
                }


def read_squad_files(paths: Sequence[Union[str, os.PathLike]], require_answers: bool = True) -> Iterator[Dict]:
    """:func:`read_squad_json` over several files, in order."""
    for path in paths:
        yield from read_squad_json(path, require_answers=require_answers)
