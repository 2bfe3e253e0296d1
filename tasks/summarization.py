"""Catalogue: summarization tasks (document -> summary), scored with ROUGE.

Registered here:

* ``cnn_dailymail``        TFDS ``cnn_dailymail:3.*.*``: ``"summarize: " + article`` -> highlights
* ``xsum``                 TFDS ``xsum``: ``"summarize: " + document`` -> summary
* ``xsum_files``           the same from JSONL files under ``$T5PRE_DATA_DIR/xsum/``
* ``debian_descriptions``  Debian package descriptions -> their one-line synopsis, JSONL files
  under ``$T5PRE_DATA_DIR/debian-descriptions/``
* ``default_summarize``    embedded, no download: a Python docstring's body -> its first line

and :func:`register_jsonl_summarization_task` for a user's own JSONL files.

Every task: inputs are ``prefix + document`` with runs of whitespace collapsed (SentencePiece
would drop newlines anyway), targets the stripped summary; examples with an empty document or
summary are dropped; both features are tokenized with the task's vocabulary, trimmed to the
caller's ``sequence_length`` and end in EOS. T5 used 512 / 512 tokens for CNN/DailyMail.
Evaluation: :func:`~t5pre.evaluation.postprocessors.summarization_postprocessor` (one sentence a
line, T5's convention for ROUGE-Lsum) and :func:`~t5pre.evaluation.metrics.rouge`.

TFDS tasks register without ``tensorflow_datasets`` installed; they need it, and the dataset
prepared with ``tfds build`` in its data dir, only when their data is read.
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

from t5pre.data import preprocessors as standard
from t5pre.data.qa_sources import DataDirSource
from t5pre.data.registry import Feature, TaskRegistry
from t5pre.data.sources import FunctionSource, JSONLSource, TFDSSource
from t5pre.errors import DataError
from t5pre.data.metrics import rouge
from t5pre.data.postprocessors import summarization_postprocessor

SUMMARIZE_PREFIX = "summarize: "


def _vocabulary_or_default(vocabulary):
    if vocabulary is not None:
        return vocabulary
    from t5pre.data.vocabulary import default_vocabulary

    return default_vocabulary()


def output_features(vocabulary=None) -> dict:
    """``inputs`` and ``targets`` features (EOS appended) over ``vocabulary`` (default: shipped)."""
    vocabulary = _vocabulary_or_default(vocabulary)
    return {"inputs": Feature(vocabulary), "targets": Feature(vocabulary)}


def _collapse_whitespace(text):
    import tensorflow as tf

    return tf.strings.strip(tf.strings.regex_replace(text, r"\s+", " "))


def summarize(document_key: str = "document", summary_key: str = "summary", prefix: str = SUMMARIZE_PREFIX):
    """Preprocessor factory: ``{document_key, summary_key}`` -> ``{"inputs", "targets"}`` text.

    ``inputs = prefix + document`` (whitespace collapsed), ``targets = summary`` (stripped; inner
    newlines kept, since they separate sentences for ROUGE-Lsum). Examples whose document or
    summary is empty or blank are dropped.
    """

    def summarize_preprocessor(dataset, ctx=None):
        import tensorflow as tf

        spec = dataset.element_spec
        for key in (document_key, summary_key):
            if key not in spec:
                where = f"task {ctx.task_name!r}: " if ctx is not None and ctx.task_name else ""
                raise DataError(f"{where}summarize: the source has no field {key!r} (it has {sorted(spec)})")

        def to_text(example):
            document = _collapse_whitespace(example[document_key])
            summary = tf.strings.strip(example[summary_key])
            return {"inputs": tf.strings.join([prefix, document]), "targets": summary, "_document": document}

        def not_empty(example):
            return tf.logical_and(
                tf.strings.length(example["_document"]) > 0, tf.strings.length(example["targets"]) > 0
            )

        def drop_helper(example):
            return {"inputs": example["inputs"], "targets": example["targets"]}

        return (
            dataset.map(to_text, num_parallel_calls=tf.data.AUTOTUNE)
            .filter(not_empty)
            .map(drop_helper, num_parallel_calls=tf.data.AUTOTUNE)
        )

    summarize_preprocessor.__name__ = f"summarize({document_key}->{summary_key}, prefix={prefix!r})"
    return summarize_preprocessor


def summarization_preprocessors(document_key="document", summary_key="summary", prefix=SUMMARIZE_PREFIX) -> list:
    """The full preprocessor list: format, tokenize (keeping the text), trim and append EOS."""
    return [summarize(document_key, summary_key, prefix), standard.tokenize, standard.append_eos_after_trim]


def register_summarization_task(
    name: str,
    source,
    *,
    document_key: str = "document",
    summary_key: str = "summary",
    prefix: str = SUMMARIZE_PREFIX,
    vocabulary=None,
    replace: bool = False,
    description: str = "",
):
    """Register a summarization task over any source with document / summary text fields."""
    return TaskRegistry.add(
        name,
        source,
        preprocessors=summarization_preprocessors(document_key, summary_key, prefix),
        output_features=output_features(vocabulary),
        metric_fns=[rouge],
        postprocess_fn=summarization_postprocessor,
        replace=replace,
        description=description,
    )


def register_jsonl_summarization_task(
    name: str,
    splits: Mapping[str, object],
    document_key: str = "document",
    summary_key: str = "summary",
    prefix: str = SUMMARIZE_PREFIX,
    *,
    vocabulary=None,
    replace: bool = False,
):
    """Register a summarization task over JSON Lines files.

    ``splits`` maps a split name to a path, glob or list of them
    (``{"train": "data/train-*.jsonl", "validation": "data/dev.jsonl"}``); every line is a JSON
    object holding the document under ``document_key`` and the summary under ``summary_key``
    (nested keys as ``"a.b"``). Files are only opened when a dataset is requested.
    """
    source = JSONLSource(splits, fields={"document": document_key, "summary": summary_key})
    return register_summarization_task(
        name, source, prefix=prefix, vocabulary=vocabulary, replace=replace,
        description=f"summarization over JSONL files ({document_key} -> {summary_key})",
    )


def register_data_dir_summarization_task(
    name: str,
    relative_splits: Mapping[str, object],
    document_key: str = "document",
    summary_key: str = "summary",
    prefix: str = SUMMARIZE_PREFIX,
    *,
    vocabulary=None,
    replace: bool = False,
    description: str = "",
):
    """Register a JSONL summarization task whose files lie under ``$T5PRE_DATA_DIR``.

    ``relative_splits`` paths are relative to the data directory, which is looked up only when a
    dataset is requested (a clear DataError names the missing file and the variable).
    """
    fields = {"document": document_key, "summary": summary_key}
    source = DataDirSource(relative_splits, lambda resolved: JSONLSource(resolved, fields=fields), name=name)
    return register_summarization_task(
        name, source, prefix=prefix, vocabulary=vocabulary, replace=replace, description=description
    )


def register_tfds_summarization_task(
    name: str,
    tfds_name: str,
    document_key: str,
    summary_key: str,
    splits: Sequence[str] = ("train", "validation", "test"),
    *,
    prefix: str = SUMMARIZE_PREFIX,
    data_dir: Optional[str] = None,
    vocabulary=None,
    replace: bool = False,
):
    """Register a summarization task over a TensorFlow Datasets builder (read lazily)."""
    source = TFDSSource(tfds_name, splits=list(splits), data_dir=data_dir)
    return register_summarization_task(
        name, source, document_key=document_key, summary_key=summary_key, prefix=prefix,
        vocabulary=vocabulary, replace=replace, description=f"TFDS {tfds_name}: {document_key} -> {summary_key}",
    )


# --------------------------------------------------------------------------- embedded demo task
#: Docstrings whose body (after the first line) has fewer words than this are not used: a body of
#: a few words is no document to summarize.
MIN_BODY_WORDS = 12
#: The first line must look like a sentence of a few words, not a signature or a heading.
MIN_SUMMARY_WORDS = 3
MAX_SUMMARY_WORDS = 40


def is_summarizable(summary: str, body: str) -> bool:
    """Whether a docstring makes a sensible (body -> first line) example.

    Rejects bodies under :data:`MIN_BODY_WORDS` words, first lines that are too short or long,
    first lines that look like call signatures (``f(x, y) -> z``, as C-implemented builtins have)
    or reST section underlines, and bodies that merely repeat the first line.
    """
    summary = " ".join(summary.split())
    body = " ".join(body.split())
    words = summary.split()
    if not MIN_SUMMARY_WORDS <= len(words) <= MAX_SUMMARY_WORDS:
        return False
    if len(body.split()) < MIN_BODY_WORDS:
        return False
    if "->" in summary or (summary.rstrip().endswith(")") and "(" in words[0]):
        return False
    if set(summary) <= set("=-~*^# "):
        return False
    return summary.lower() not in body.lower()[: len(summary) + 20]


def docstring_summary_examples(split: str) -> list:
    """``[{"document": body, "summary": first line, "name": qualified name}]`` from the embedded
    default corpus, in its order, for ``split`` (the corpus's own hash split), filtered by
    :func:`is_summarizable`."""
    from t5pre.data.default_corpus import default_corpus_records

    return [
        {"document": record["body"], "summary": record["summary"], "name": record["name"]}
        for record in default_corpus_records(split)
        if is_summarizable(record["summary"], record["body"])
    ]


def _docstring_summary_dataset(split, shuffle=False, seed=0):
    import tensorflow as tf

    examples = docstring_summary_examples(split)
    if not examples:
        raise DataError(f"default_summarize: the embedded corpus has no usable docstrings in split {split!r}")
    columns = {key: [example[key] for example in examples] for key in ("document", "summary", "name")}
    return tf.data.Dataset.from_tensor_slices(columns)


register_tfds_summarization_task("cnn_dailymail", "cnn_dailymail:3.*.*", "article", "highlights")
register_tfds_summarization_task("xsum", "xsum", "document", "summary")
register_data_dir_summarization_task(
    "xsum_files",
    {"train": "xsum/train.jsonl", "validation": "xsum/validation.jsonl", "test": "xsum/test.jsonl",
     "sample": "xsum/sample.jsonl"},
    description="XSum from JSONL files (document -> summary) under $T5PRE_DATA_DIR/xsum/",
)
register_data_dir_summarization_task(
    "debian_descriptions",
    {"train": "debian-descriptions/train.jsonl", "validation": "debian-descriptions/validation.jsonl"},
    description="Debian package long description -> synopsis, JSONL under $T5PRE_DATA_DIR/debian-descriptions/",
)
register_summarization_task(
    "default_summarize",
    FunctionSource(_docstring_summary_dataset, splits=("train", "validation"), name="embedded docstrings"),
    description="embedded Python docstrings: body -> first line (no download)",
)
