"""Catalogue: extractive question answering, scored with SQuAD exact match and F1.

Registered here:

* ``squad_v1.1``        TFDS ``squad/v1.1``
* ``squad_v1.1_files``  the same from the official SQuAD JSON files under
  ``$T5PRE_DATA_DIR/squad-v1.1/{train,validation}.json``
* ``default_qa``        embedded, no download: questions about the arguments and return values
  documented in Python docstrings (see :func:`docstring_qa_examples`)

and :func:`register_squad_json_task` for a user's own files in the SQuAD JSON layout.

T5's format: inputs ``"question: {question} context: {context}"`` (whitespace collapsed),
targets the first gold answer; every gold answer is kept in the example as ``answers`` (1-D
``tf.string``) because evaluation takes the best match over all of them. Both features are
tokenized, trimmed to the caller's ``sequence_length`` and end in EOS (T5 used 512 / 97).
Evaluation: :func:`~t5pre.evaluation.postprocessors.qa_postprocessor` (targets -> the list of all
answers) and :func:`~t5pre.evaluation.metrics.squad`.
"""

from __future__ import annotations

import re
from typing import List, Mapping, Optional, Sequence

from t5pre.data import preprocessors as standard
from t5pre.data.qa_sources import DataDirSource, SquadJSONSource
from t5pre.data.registry import Feature, TaskRegistry
from t5pre.data.sources import FunctionSource, TFDSSource
from t5pre.errors import DataError
from t5pre.data.metrics import squad
from t5pre.data.postprocessors import qa_postprocessor


def output_features(vocabulary=None) -> dict:
    """``inputs`` and ``targets`` features (EOS appended) over ``vocabulary`` (default: shipped)."""
    if vocabulary is None:
        from t5pre.data.vocabulary import default_vocabulary

        vocabulary = default_vocabulary()
    return {"inputs": Feature(vocabulary), "targets": Feature(vocabulary)}


def _collapse_whitespace(text):
    import tensorflow as tf

    return tf.strings.strip(tf.strings.regex_replace(text, r"\s+", " "))


def squad_format(dataset, ctx=None):
    """Preprocessor: ``{question, context, answers}`` -> T5's text format.

    Output: ``inputs = "question: {q} context: {c}"``, ``targets`` = the first answer,
    ``answers`` = all answers (stripped), plus ``id`` when the source has one. ``answers`` may be
    a 1-D string tensor or TFDS SQuAD's ``{"text": [...], "answer_start": [...]}``. Questions
    without any answer are dropped (nothing to learn or score).
    """
    import tensorflow as tf

    spec = dataset.element_spec
    missing = [key for key in ("question", "context", "answers") if key not in spec]
    if missing:
        where = f"task {ctx.task_name!r}: " if ctx is not None and ctx.task_name else ""
        raise DataError(f"{where}squad_format: the source has no field {missing[0]!r} (it has {sorted(spec)})")
    answers_are_dict = isinstance(spec["answers"], dict)
    keep_id = "id" in spec

    def to_text(example):
        answers = example["answers"]["text"] if answers_are_dict else example["answers"]
        answers = tf.strings.strip(tf.reshape(answers, [-1]))
        question = _collapse_whitespace(example["question"])
        context = _collapse_whitespace(example["context"])
        output = {
            "inputs": tf.strings.join(["question: ", question, " context: ", context]),
            "targets": tf.cond(tf.size(answers) > 0, lambda: answers[0], lambda: tf.constant("")),
            "answers": answers,
        }
        if keep_id:
            output["id"] = example["id"]
        return output

    def has_answer(example):
        return tf.strings.length(example["targets"]) > 0

    return dataset.map(to_text, num_parallel_calls=tf.data.AUTOTUNE).filter(has_answer)


QA_PREPROCESSORS = (squad_format, standard.tokenize, standard.append_eos_after_trim)


def register_qa_task(name: str, source, *, vocabulary=None, replace: bool = False, description: str = ""):
    """Register an extractive-QA task over any source with question / context / answers."""
    return TaskRegistry.add(
        name,
        source,
        preprocessors=list(QA_PREPROCESSORS),
        output_features=output_features(vocabulary),
        metric_fns=[squad],
        postprocess_fn=qa_postprocessor,
        replace=replace,
        description=description,
    )


def register_squad_json_task(
    name: str,
    splits: Mapping[str, object],
    *,
    vocabulary=None,
    require_answers: bool = True,
    replace: bool = False,
):
    """Register a QA task over files in the official SQuAD JSON layout.

    ``splits`` maps a split name to a path, glob or list of them; every question of the files
    (``data -> paragraphs -> qas``) is one example. Files are only read when a dataset is
    requested.
    """
    return register_qa_task(
        name, SquadJSONSource(splits, require_answers=require_answers), vocabulary=vocabulary,
        replace=replace, description="extractive QA from SQuAD-format JSON files",
    )


# --------------------------------------------------------------------------- embedded demo task
# Google-style docstring sections (what Keras and much of the standard library use):
#     Args:
#         name: Description that may go on
#             over several lines.
#     Returns:
#         What comes back.
_SECTION = re.compile(r"^[ \t]*(?P<title>Args|Arguments|Parameters|Returns|Return|Yields)\s*:\s*$")
_ENTRY = re.compile(r"^\*{0,2}(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*(\([^)]*\))?\s*:\s*(?P<desc>\S.*)$")
# A sentence ends at a period followed by space and a capital (or a backtick), not in "e.g. x".
_SENTENCE_END = re.compile(r"(?<=[a-z0-9`)\]])\.\s+(?=[A-Z`])")

#: Contexts longer than this many words are skipped, so that at 512 input tokens the answer is
#: always inside the (trimmed) input. Measured on the shipped corpus: the longest kept context is
#: 581 tokens and no answer ends beyond token 512.
MAX_CONTEXT_WORDS = 250
MIN_ANSWER_WORDS = 2
MAX_ANSWER_WORDS = 30


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _squeeze(text: str) -> str:
    return " ".join(text.split())


def _sections(text: str):
    """``(title, header line, body lines)`` for every Args/Returns-like section of a docstring."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        match = _SECTION.match(lines[i])
        if not match:
            i += 1
            continue
        base, header, body = _indent(lines[i]), lines[i], []
        i += 1
        while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > base):
            body.append(lines[i])
            i += 1
        yield match.group("title"), header, [line for line in body if line.strip()]


def _first_sentence(description: str) -> Optional[str]:
    """The description's first sentence (at least 3 words, joining sentences if needed), with the
    final period dropped as in SQuAD answers; None if outside the answer length bounds."""
    parts = _SENTENCE_END.split(_squeeze(description))
    answer, k = parts[0], 1
    while len(answer.split()) < 3 and k < len(parts):
        answer, k = f"{answer}. {parts[k]}", k + 1
    answer = answer.rstrip(".").strip()
    return answer if MIN_ANSWER_WORDS <= len(answer.split()) <= MAX_ANSWER_WORDS else None


def _display_name(record: Mapping) -> str:
    """``Class.method`` for methods, the bare name otherwise."""
    parts = record["name"].split(".")
    if record["kind"] == "function" and len(parts) > 1 and parts[-2][:1].isupper():
        return ".".join(parts[-2:])
    return parts[-1]


def docstring_qa(record: Mapping) -> tuple:
    """``(context, [(question, answer), ...])`` for one default-corpus record.

    The context is the docstring's summary followed by its Args and Returns sections (code
    examples and long prose left out, whitespace collapsed). Questions:

    * ``"What is the {param} argument of {name}?"`` -> the first sentence of that parameter's
      description, for every documented parameter;
    * ``"What does {name} return?"`` (or ``yield``) -> the first sentence of the Returns section.

    Each answer is a verbatim span of the context, so the task is genuinely extractive: the model
    must find the right entry among the other parameters' descriptions.
    """
    name = _display_name(record)
    context_parts, qas = [record["summary"]], []
    for title, header, body in _sections(record["text"]):
        if not body:
            continue
        context_parts.append(f"{header.strip()} {_squeeze(' '.join(body))}")
        if title in ("Args", "Arguments", "Parameters"):
            level = min(_indent(line) for line in body)
            entries: List[Optional[list]] = []
            for line in body:
                if _indent(line) == level:
                    match = _ENTRY.match(line.strip())
                    entries.append([match.group("name"), match.group("desc")] if match else None)
                elif entries and entries[-1] is not None:  # a continuation line of the entry
                    entries[-1][1] += " " + line.strip()
            for entry in entries:
                answer = _first_sentence(entry[1]) if entry else None
                if answer:
                    qas.append((f"What is the {entry[0]} argument of {name}?", answer))
        else:
            answer = _first_sentence(" ".join(body))
            if answer:
                verb = "yield" if title == "Yields" else "return"
                qas.append((f"What does {name} {verb}?", answer))
    return _squeeze(" ".join(context_parts)), qas


_docstring_qa_memo: dict = {}


def docstring_qa_examples(split: str) -> list:
    """SQuAD-like example dicts (``id title context question answers``) built from the embedded
    default corpus for ``split`` (the corpus's own hash split of docstring names, so no docstring
    gives questions to both splits). Contexts over :data:`MAX_CONTEXT_WORDS` words and answers
    that are not a span of their context are skipped."""
    if split in _docstring_qa_memo:
        return _docstring_qa_memo[split]
    from t5pre.data.default_corpus import default_corpus_records

    examples = []
    for record in default_corpus_records(split):
        context, qas = docstring_qa(record)
        if len(context.split()) > MAX_CONTEXT_WORDS:
            continue
        for number, (question, answer) in enumerate(qas):
            if answer in context:
                examples.append(
                    {"id": f"{record['name']}#{number}", "title": record["name"], "context": context,
                     "question": question, "answers": [answer]}
                )
    _docstring_qa_memo[split] = examples
    return examples


def _docstring_qa_dataset(split, shuffle=False, seed=0):
    import tensorflow as tf

    examples = docstring_qa_examples(split)
    if not examples:
        raise DataError(f"default_qa: the embedded corpus gives no questions in split {split!r}")
    columns = {key: [example[key] for example in examples] for key in ("id", "title", "context", "question", "answers")}
    return tf.data.Dataset.from_tensor_slices(columns)


register_qa_task(
    "squad_v1.1",
    TFDSSource("squad/v1.1", splits=("train", "validation")),
    description="TFDS squad/v1.1: question + context -> answer",
)
register_qa_task(
    "squad_v1.1_files",
    DataDirSource(
        {"train": "squad-v1.1/train.json", "validation": "squad-v1.1/validation.json"},
        lambda resolved: SquadJSONSource(resolved),
        name="squad_v1.1_files",
    ),
    description="SQuAD v1.1 from the official JSON files under $T5PRE_DATA_DIR/squad-v1.1/",
)
register_qa_task(
    "default_qa",
    FunctionSource(_docstring_qa_dataset, splits=("train", "validation"), name="embedded docstrings (Args/Returns QA)"),
    description="embedded Python docstrings: questions about documented arguments and return values",
)
