"""Catalogue: denoising pretraining tasks.

Registered on import (``t5pre.get_task(name)`` imports the catalogue first):

* ``default_span_corruption``  T5 span corruption (density 0.15, mean span 3) over the embedded
  default corpus (Python/Keras docstrings), default vocabulary. The main pretraining job's task.
* ``default_prefix_lm``        prefix-LM over the same corpus.
* ``default_iid_denoising``    BERT-style i.i.d. denoising over the same corpus.
* ``default_ul2``              UL2's mixture of denoisers (a mixture of the tasks
  ``default_ul2_r``, ``default_ul2_x_long_spans``, ``default_ul2_x_dense``, ``default_ul2_s``),
  with the paradigm prefixes ``[NLU]``/``[NLG]``/``[S2S]`` written as plain text.
* ``c4_span_corruption``       span corruption over TFDS ``c4/en`` (needs ``tensorflow_datasets``
  and the prepared data; registering it needs neither).

:func:`register_text_pretraining_task` registers the same pipeline over a user's own text files
(plain text with one document per line, per paragraph or per file, or JSON Lines with a text
field); :mod:`t5pre.tasks.files` builds it from a run config's ``data.files`` (``t5pre pretrain
--files``).

Every pretraining pipeline is: text -> token ids (``targets`` vocabulary) -> documents
concatenated and cut into chunks whose length makes the objective's outputs fill
``sequence_length`` exactly (:mod:`t5pre.data.chunking`) -> the objective
(:mod:`t5pre.data.denoising`), which appends EOS. Examples carry ``inputs`` and ``targets`` only
(no ``*_pretokenized`` text: chunks cut across documents).
"""

from __future__ import annotations

import os
from typing import Mapping, Sequence

from t5pre.data import chunking, denoising
from t5pre.data.registry import Feature, MixtureRegistry, TaskRegistry
from t5pre.errors import ConfigError, DataError

C4_TFDS_NAME = "c4/en"
_TOKENIZE_BATCH = 64
_JSON_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz", ".ndjson", ".ndjson.gz")


def _resolve_vocabulary(vocabulary):
    if vocabulary is None:
        from t5pre.data.vocabulary import default_vocabulary

        return default_vocabulary()  # cached; loading it needs SentencePiece only, not TF
    if isinstance(vocabulary, (str, os.PathLike)):
        from t5pre.data import vocabulary as vocab_module

        path = os.fspath(vocabulary)
        if os.path.isdir(path):
            return vocab_module.load_vocabulary(path)
        if not os.path.exists(path):
            raise ConfigError(f"vocabulary file {path!r} does not exist")
        return vocab_module.SentencePieceVocabulary(path)
    return vocabulary


def pretraining_features(vocabulary=None) -> dict:
    """``{"inputs", "targets"}`` features sharing one vocabulary (default: the shipped one)."""
    vocabulary = _resolve_vocabulary(vocabulary)
    return {"inputs": Feature(vocabulary, add_eos=True), "targets": Feature(vocabulary, add_eos=True)}


def tokenize_text(text_key: str = "text"):
    """Preprocessor: ``{text_key: string}`` -> ``{"targets": int32 ids}`` (no EOS), batched for speed."""

    def tokenize_text_preprocessor(dataset, ctx):
        import tensorflow as tf

        spec = dataset.element_spec
        if not isinstance(spec, Mapping) or text_key not in spec:
            have = sorted(spec) if isinstance(spec, Mapping) else spec
            raise DataError(f"task {getattr(ctx, 'task_name', '')!r}: the source has no text "
                            f"field {text_key!r} (it has {have})")
        vocabulary = ctx.output_features["targets"].vocabulary

        # Plain TF calls: nothing for autograph to convert (and it once tripped on the tokenizer).
        @tf.autograph.experimental.do_not_convert
        def encode(batch):
            ids = vocabulary.encode_tf(batch[text_key])
            return {"targets": tf.cast(ids, tf.int32)}

        return (dataset.batch(_TOKENIZE_BATCH)
                .map(encode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
                .unbatch())

    tokenize_text_preprocessor.__name__ = f"tokenize_text({text_key})"
    return tokenize_text_preprocessor


def pretraining_preprocessors(objective: denoising.DenoisingObjective, text_key: str = "text",
                              document_separator_id: int | None = None,
                              keep_remainder: bool = True) -> list:
    """The preprocessor list of a pretraining task: tokenize, chunk to fit, apply ``objective``."""
    return [
        tokenize_text(text_key),
        chunking.split_into_chunks(objective, document_separator_id=document_separator_id,
                                   keep_remainder=keep_remainder),
        objective,
    ]


def _make_objective(objective, options):
    if isinstance(objective, denoising.DenoisingObjective):
        if options:
            raise ConfigError("objective_options only apply to an objective given by name")
        return objective
    return denoising.make_objective(str(objective), **dict(options or {}))


def _register(name, source, objective, vocabulary, text_key="text", document_separator_id=None,
              keep_remainder=True, replace=False, description=""):
    return TaskRegistry.add(
        name, source,
        preprocessors=pretraining_preprocessors(objective, text_key, document_separator_id,
                                                keep_remainder),
        output_features=pretraining_features(vocabulary),
        replace=replace, description=description)


def register_ul2(name: str, source, vocabulary=None, text_key: str = "text",
                 paradigm_prefixes: bool = True, rates: Mapping[str, float] | None = None,
                 replace: bool = False, **chunk_options):
    """Register UL2's denoiser tasks ``{name}_{r,x_long_spans,x_dense,s}`` and the mixture ``name``."""
    entries = []
    for denoiser in denoising.ul2_denoisers(paradigm_prefixes=paradigm_prefixes, rates=rates):
        task = _register(f"{name}_{denoiser.name}", source, denoiser.objective, vocabulary,
                         text_key, replace=replace,
                         description=f"UL2 {denoiser.name}-denoiser", **chunk_options)
        entries.append((task.name, denoiser.rate))
    return MixtureRegistry.add(name, entries, replace=replace)


def _split_files(files) -> dict:
    if isinstance(files, (str, os.PathLike)) or (isinstance(files, Sequence)
                                                 and not isinstance(files, Mapping)):
        files = {"train": files}
    if not isinstance(files, Mapping) or not files:
        raise ConfigError(f"files must map split names to file patterns, got {files!r}")
    out = {}
    for split, patterns in files.items():
        if isinstance(patterns, (str, os.PathLike)):
            patterns = [patterns]
        patterns = [os.fspath(p) for p in patterns or []]
        if not patterns:
            raise ConfigError(f"files[{split!r}]: no file pattern given")
        out[str(split)] = patterns
    return out


#: ``file_format`` values of :func:`register_text_pretraining_task` (``text`` = ``lines``).
TEXT_FILE_FORMATS = ("lines", "paragraphs", "file", "jsonl")


def is_jsonl_path(pattern: str) -> bool:
    """Whether a file name or pattern ends like JSON Lines (.jsonl, .json, .ndjson, + .gz)."""
    return str(pattern).lower().endswith(_JSON_SUFFIXES)


def _file_format(files: Mapping[str, list]) -> str:
    kinds = {("jsonl" if is_jsonl_path(p) else "lines")
             for patterns in files.values() for p in patterns}
    if len(kinds) > 1:
        raise ConfigError("files mix JSON Lines (.jsonl/.json) and plain text; pass file_format= "
                          "'jsonl' or 'lines' explicitly, or register them as separate tasks")
    return kinds.pop()


def register_text_pretraining_task(
    name: str,
    files,
    vocabulary=None,
    objective="span_corruption",
    *,
    text_key: str = "text",
    file_format: str | None = None,
    objective_options: Mapping | None = None,
    document_separator_id: int | None = None,
    keep_remainder: bool = True,
    replace: bool = True,
):
    """Register a pretraining task over the user's own text files; returns the Task (or Mixture).

    Args:
        name: task name (re-registering a name replaces it unless ``replace=False``).
        files: ``{"train": [patterns], "validation": [patterns]}`` (globs, ``.gz`` read as gzip);
            a single pattern or list means ``{"train": ...}``.
        vocabulary: ``None`` (the shipped default), a SentencePiece model file, a model directory
            (``spiece.model`` + ``vocab.json``) or a vocabulary object.
        objective: ``"span_corruption"`` (T5), ``"prefix_lm"``, ``"iid_denoising"``, ``"ul2"``
            (registers ``{name}_r`` ... and returns the mixture ``name``) or an objective object.
        text_key: the JSON field holding the text (JSON Lines files).
        file_format: ``"lines"`` (one document per non-blank line; ``"text"`` is the same),
            ``"paragraphs"`` (documents separated by blank lines, hard-wrapped lines joined),
            ``"file"`` (one document per file) or ``"jsonl"``; default from the extensions
            (``.jsonl``/``.json`` -> JSON Lines, else ``lines``).
        objective_options: keyword arguments of the named objective (e.g. ``noise_density``).
        document_separator_id / keep_remainder: see :mod:`t5pre.data.chunking`.
    """
    from t5pre.data.sources import JSONLSource, TextLineSource

    if not name or not isinstance(name, str):
        raise ConfigError(f"a pretraining task needs a name, got {name!r}")
    split_files = _split_files(files)
    file_format = file_format or _file_format(split_files)
    if file_format == "text":
        file_format = "lines"
    if file_format == "jsonl":
        source = JSONLSource(split_files, fields={"text": text_key})
    elif file_format in TEXT_FILE_FORMATS:
        source = TextLineSource(split_files, field="text", documents=file_format)
    else:
        raise ConfigError(f"file_format must be one of {', '.join(TEXT_FILE_FORMATS)}, "
                          f"got {file_format!r}")
    vocabulary = _resolve_vocabulary(vocabulary)
    chunk_options = {"document_separator_id": document_separator_id,
                     "keep_remainder": keep_remainder}
    if objective == "ul2":
        return register_ul2(name, source, vocabulary, replace=replace,
                            **dict(objective_options or {}), **chunk_options)
    return _register(name, source, _make_objective(objective, objective_options), vocabulary,
                     replace=replace, description=f"{objective} over {split_files}",
                     **chunk_options)


def _register_catalogue():
    from t5pre.data.default_corpus import default_corpus_source
    from t5pre.data.sources import TFDSSource

    corpus = default_corpus_source(fields=("text",))
    _register("default_span_corruption", corpus, denoising.span_corruption(), None,
              description="T5 span corruption over the embedded default corpus")
    _register("default_prefix_lm", corpus, denoising.prefix_lm(), None,
              description="prefix-LM over the embedded default corpus")
    _register("default_iid_denoising", corpus, denoising.iid_denoising(), None,
              description="BERT-style i.i.d. denoising over the embedded default corpus")
    register_ul2("default_ul2", corpus)
    _register("c4_span_corruption", TFDSSource(C4_TFDS_NAME, splits=("train", "validation")),
              denoising.span_corruption(), None,
              description="T5 span corruption over TFDS c4/en (prepared data required)")


_register_catalogue()
