"""Tasks over a user's own files, described by a run config's ``data.files`` keys.

``t5pre pretrain --files 'corpus/*.txt'`` and ``t5pre finetune --train-files train.jsonl`` (or
a ``data.files`` section in YAML) need no Python: :func:`files_task` builds the task with the
catalogue's own machinery and registers it under ``data.task`` (default
``files_span_corruption``, ``files_summarization`` or ``files_squad``), so that everything that
looks a task up by name (training, ``t5pre data cache`` workers, evaluation) finds it:

* **pretraining** (text): :func:`t5pre.tasks.pretraining.register_text_pretraining_task`, T5
  span corruption over ``lines`` / ``paragraphs`` / ``file`` documents or a JSON Lines
  ``text_field``;
* **seq2seq** (``input_field`` -> ``target_field`` of JSON Lines, ``prefix`` before every
  input): :func:`t5pre.tasks.summarization.register_summarization_task`, scored with ROUGE;
* **qa** (``format: squad``, SQuAD v1.1 JSON): :func:`t5pre.tasks.qa.register_qa_task` over a
  :class:`~t5pre.data.qa_sources.SquadJSONSource`, scored with SQuAD EM / F1.

A run records the keys (``config.yaml``; fine-tuning also ``finetune.json`` / ``best.json``), so
resume, ``evaluate`` and ``predict`` rebuild the same task without any flag repeated.
"""

from __future__ import annotations

from typing import Mapping

from t5pre.errors import ConfigError, DataError
from t5pre.data.sources import files_kind

#: Names this module registered (it may replace them; it never replaces a catalogue task).
_OWNED: set = set()


def _spec(data) -> dict:
    if isinstance(data, Mapping):
        return dict(data)
    spec = data.files_spec()  # a training.config.DataSection
    if spec is None:
        raise ConfigError("data.files is not set")
    return spec


def check_files(files: Mapping) -> None:
    """Every glob of ``{split: [globs]}`` matches a file; else a DataError naming the split and
    the glob (before any TensorFlow pipeline is built)."""
    from t5pre.data.qa_sources import _expand

    for split, patterns in files.items():
        for pattern in patterns:
            try:
                _expand([pattern])
            except DataError:
                raise DataError(f"data.files ({split} split): no file matches {pattern!r}") \
                    from None


def files_task(data, vocabulary=None, *, check: bool = True):
    """The task ``data`` (a ``DataSection`` with ``files`` set, or its
    :meth:`~t5pre.training.config.DataSection.files_spec` dict) describes, registered under
    its name. ``vocabulary`` is used unless the spec names one (fine-tuning passes the init
    model's); neither: the shipped vocabulary. ``check`` first makes sure every glob matches."""
    from t5pre.data.registry import TaskRegistry
    from t5pre.tasks.pretraining import _resolve_vocabulary

    spec = _spec(data)
    name, files, kind = spec.get("task"), spec.get("files"), files_kind(spec)
    if not name or not files:
        raise ConfigError(f"a files task needs a name and files, got {spec!r}")
    if name in TaskRegistry.names() and name not in _OWNED:
        raise ConfigError(f"data.task = {name!r} is a registered task; with data.files, "
                          "data.task names the task made of the files: choose another name, "
                          "or leave data.task unset")
    if check:
        check_files(files)
    if spec.get("vocabulary"):
        vocabulary = spec["vocabulary"]
    vocabulary = _resolve_vocabulary(vocabulary)
    fmt = spec.get("format")
    if kind == "pretraining":
        from t5pre.tasks.pretraining import register_text_pretraining_task

        task = register_text_pretraining_task(name, files, vocabulary,
                                              text_key=spec.get("text_field") or "text",
                                              file_format=fmt, replace=True)
    elif kind == "seq2seq":
        from t5pre.data.sources import JSONLSource
        from t5pre.tasks.summarization import register_summarization_task

        if fmt not in (None, "jsonl"):
            raise ConfigError(f"data.input_field / target_field read JSON Lines, but data.format "
                              f"is {fmt!r}")
        source = JSONLSource(files, fields={"document": spec["input_field"],
                                            "summary": spec["target_field"]})
        task = register_summarization_task(
            name, source, prefix=spec.get("prefix") or "", vocabulary=vocabulary, replace=True,
            description=f"JSON Lines files: {spec['input_field']} -> {spec['target_field']} "
                        "(ROUGE)")
    else:
        from t5pre.data.qa_sources import SquadJSONSource
        from t5pre.tasks.qa import register_qa_task

        task = register_qa_task(name, SquadJSONSource(files), vocabulary=vocabulary,
                                replace=True,
                                description="SQuAD JSON files (SQuAD exact match / F1)")
    _OWNED.add(name)
    return task
