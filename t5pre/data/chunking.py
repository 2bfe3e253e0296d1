"""Concatenate tokenized documents into one stream and cut it into chunks of an exact length.

Pretraining wants every example full: a span-corruption chunk of ``tokens_length`` raw tokens
(:func:`t5pre.data.denoising.random_spans_helper`) becomes inputs/targets that exactly fill the
model's lengths, so no compute is spent on padding. This module does the cutting.

Choices (documented because they change what the model sees):

* **Documents are concatenated back to back with no separator by default** (as T5 does). An EOS
  between documents would land inside inputs and, when it falls in a noise span, inside targets,
  teaching the decoder to emit EOS mid-sequence. ``document_separator_id`` adds a separator id
  after every document for those who want boundaries marked (choose a regular piece, not EOS).
* **The last partial chunk of the stream is kept** by default (``keep_remainder=True``), so a tiny
  validation split still yields an example; it is the only chunk shorter than ``tokens_length``
  per pass over the data. ``keep_remainder=False`` drops it and every chunk is full. When the
  source repeats forever before this step there is no "last" chunk and nothing is shorter.
* Nothing here treats id 0 specially: chunk boundaries come from lengths, so a 0 inside a document
  is carried like any other id (the seqio trap of "0 = padding" is avoided).

The work runs inside ``tf.data``: a ``scan`` over blocks of documents carries the leftover tokens
from one block to the next; nothing runs per token or in Python.
"""

from __future__ import annotations

from typing import Any, Callable, Union

from t5pre.errors import ConfigError, DataError

TokensLength = Union[int, Callable[[Any], int], Any]

_DOCUMENTS_PER_BLOCK = 64


def _resolve_length(tokens_length: TokensLength, ctx) -> int:
    """An int, an objective with ``raw_tokens_length(ctx)`` or a callable ``ctx -> int``."""
    if hasattr(tokens_length, "raw_tokens_length"):
        length = tokens_length.raw_tokens_length(ctx)
    elif callable(tokens_length):
        length = tokens_length(ctx)
    else:
        length = tokens_length
    try:
        length = int(length)
    except (TypeError, ValueError):
        raise ConfigError(f"chunk length must be an integer, got {length!r}") from None
    if length < 1:
        raise ConfigError(f"chunk length must be >= 1, got {length}")
    return length


def concatenate_and_split(dataset, tokens_length: int, feature_key: str = "targets",
                          document_separator_id: int | None = None,
                          keep_remainder: bool = True):
    """Chunks ``{feature_key: int32[tokens_length]}`` cut from the concatenation of all documents.

    Args:
        dataset: elements are dicts holding a 1-D token tensor under ``feature_key`` (other keys,
            e.g. raw text, are dropped: they no longer line up with the chunks).
        tokens_length: exact chunk length.
        document_separator_id: optional id appended after every document.
        keep_remainder: emit the final partial chunk of the stream (see module docstring).
    """
    import tensorflow as tf

    if int(tokens_length) < 1:
        raise ConfigError(f"chunk length must be >= 1, got {tokens_length}")
    length = tf.constant(int(tokens_length), tf.int32)

    def block_tokens(block):
        tokens = block[feature_key]
        if not isinstance(tokens, tf.RaggedTensor):
            tokens = tf.RaggedTensor.from_tensor(tokens)
        tokens = tf.cast(tokens, tf.int32)
        if document_separator_id is not None:
            separators = tf.fill([tokens.nrows(), 1], tf.constant(int(document_separator_id)))
            tokens = tf.concat([tokens, tf.RaggedTensor.from_tensor(separators)], axis=1)
        return tokens.flat_values, False

    # The scan below runs once per *block* of documents (its fixed cost, ~0.2 ms, would dominate
    # if paid per document), and documents go straight into blocks without a per-document step.
    spec = dataset.element_spec
    if not isinstance(spec, dict) or feature_key not in spec or spec[feature_key].shape.rank != 1:
        raise DataError(f"chunking needs examples with a 1-D token feature {feature_key!r}, "
                        f"got {spec}")
    stream = (dataset.map(lambda example: {feature_key: example[feature_key]})
              .ragged_batch(_DOCUMENTS_PER_BLOCK)
              .map(block_tokens, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True))
    if keep_remainder:
        flush = tf.data.Dataset.from_tensors((tf.zeros([0], tf.int32), True))
        stream = stream.concatenate(flush)

    def step(buffer, element):
        tokens, is_flush = element
        buffer = tf.concat([buffer, tokens], axis=0)
        full = tf.size(buffer) // length
        rest = buffer[full * length:]
        # On the flush marker the remainder goes out too, padded to a row and cut back to its
        # true length below (dense rows unbatch much faster than ragged ones).
        emit_rest = tf.logical_and(is_flush, tf.size(rest) > 0)
        rows = full + tf.cast(emit_rest, tf.int32)
        padded = tf.pad(buffer, [[0, tf.maximum(0, rows * length - tf.size(buffer))]])
        padded = padded[: rows * length]
        lengths = tf.concat([tf.fill([full], length),
                             tf.fill([tf.cast(emit_rest, tf.int32)], tf.size(rest))], axis=0)
        leftover = tf.cond(is_flush, lambda: tf.zeros([0], tf.int32), lambda: rest)
        return leftover, (tf.reshape(padded, [rows, length]), lengths)

    chunks = stream.scan(tf.zeros([0], tf.int32), step).unbatch()
    return chunks.map(lambda chunk, size: {feature_key: chunk[:size]},
                      num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def split_into_chunks(tokens_length: TokensLength, feature_key: str = "targets",
                      document_separator_id: int | None = None, keep_remainder: bool = True):
    """Preprocessor ``fn(ds, ctx)`` wrapping :func:`concatenate_and_split`.

    ``tokens_length`` is an int, a callable ``ctx -> int`` or a denoising objective (its
    ``raw_tokens_length(ctx)`` is the chunk length that fills ``ctx.sequence_length`` exactly).
    """

    def preprocess(dataset, ctx):
        length = _resolve_length(tokens_length, ctx)
        return concatenate_and_split(dataset, length, feature_key, document_separator_id,
                                     keep_remainder)

    preprocess.__name__ = "split_into_chunks"
    # Read by the random-access (cached) pipeline, which cuts chunks itself.
    preprocess.chunk_options = {"tokens_length": tokens_length, "feature_key": feature_key,
                                "document_separator_id": document_separator_id}
    return preprocess
