"""Matching a task to a model's vocabulary: the check every command that feeds a task's token ids
to a model makes first (``t5pre finetune --init-from``, ``t5pre evaluate``).

A model reading ids of another vocabulary trains or scores silently on garbage, so a mismatch is
a :class:`~t5pre.errors.CheckpointError` unless the user asks for the task's text to be
tokenised with the model's vocabulary (``--use-model-vocabulary``), which
:func:`task_with_vocabulary` does through :meth:`t5pre.data.registry.Task.replace`.
"""

from __future__ import annotations

import hashlib

from t5pre.errors import CheckpointError


def describe_vocabulary(vocabulary) -> str:
    """``4100 ids, spiece sha1 1a2b3c4d`` (enough to tell two vocabularies apart in a message)."""
    if vocabulary is None:
        return "no vocabulary"
    size = getattr(vocabulary, "vocab_size", "?")
    data = getattr(vocabulary, "serialized_model", None)
    digest = hashlib.sha1(data).hexdigest()[:8] if isinstance(data, (bytes, bytearray)) else "?"
    return f"{size} ids, spiece.model sha1 {digest}"


def vocabularies_match(a, b) -> bool:
    if a is None or b is None:
        return a is b
    if a == b:
        return True
    # Two objects over the same SentencePiece bytes and sentinel count are the same vocabulary.
    return (getattr(a, "serialized_model", None) is not None
            and getattr(a, "serialized_model", None) == getattr(b, "serialized_model", None)
            and getattr(a, "extra_ids", None) == getattr(b, "extra_ids", None))


def task_with_vocabulary(task, vocabulary):
    """A copy of ``task`` that tokenises its text with ``vocabulary`` (not registered).

    For a model whose vocabulary differs from the one the task was registered with (e.g. a
    converted Hugging Face T5 on a built-in task): the task's text, preprocessors, metrics and
    postprocessing stay; only the token ids change."""
    import dataclasses

    features = {key: dataclasses.replace(feature, vocabulary=vocabulary)
                for key, feature in task.output_features.items()}
    return task.replace(output_features=features)


def check_vocabulary(model_vocabulary, task, where: str, *, use_model_vocabulary: bool = False,
                     flag: str = "--use-model-vocabulary"):
    """The task to use with a model whose vocabulary is ``model_vocabulary``.

    Returns ``task`` when the model has no vocabulary, a copy reading through the model's
    vocabulary when they match or when ``use_model_vocabulary``; raises CheckpointError
    otherwise, naming ``where`` (the model's path or flag) and ``flag``."""
    task_vocabulary = getattr(task, "vocabulary", None)
    if model_vocabulary is None:
        return task
    if vocabularies_match(model_vocabulary, task_vocabulary):
        # The same vocabulary: read the task through the model's own vocabulary object.
        return task_with_vocabulary(task, model_vocabulary)
    if use_model_vocabulary:
        return task_with_vocabulary(task, model_vocabulary)
    raise CheckpointError(
        f"{where}: the checkpoint's vocabulary ({describe_vocabulary(model_vocabulary)}) does not "
        f"match task {task.name!r}'s vocabulary ({describe_vocabulary(task_vocabulary)}); use a "
        f"checkpoint trained with the task's vocabulary, register the task over the model's "
        f"vocabulary (vocabulary=MODEL_DIR), or pass {flag} to tokenise the task's text with the "
        f"model's vocabulary")
