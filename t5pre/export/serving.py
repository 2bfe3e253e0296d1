"""The serving graph: strings in, strings out, everything inside one TensorFlow graph.

`build_serving_module(model, vocabulary, settings)` returns a `tf.Module` whose two
`tf.function`s become the SavedModel's signatures:

* `serving_default(inputs: string[B]) -> {"outputs": string[B], "scores": float32[B]}`
* `generate_ids(inputs: string[B]) -> {"ids": int32[B, max_decode_length], "scores": float32[B],
  "lengths": int32[B]}` (ids after the start token, EOS included, 0 after it; `lengths` counts
  the tokens up to and including EOS)

Inside: tensorflow-text's `SentencepieceTokenizer` built from the vocabulary's serialized model
(sentinels included, so `<extra_id_0>` in a request is one token), inputs cut to
`max_input_length - 1` tokens plus EOS and zero-padded to the longest row of the batch
(`Seq2SeqPreprocessor.encode_tf`, the in-graph twin of what `t5pre predict` does), the encoder
run once, the cached decoding loop of `t5pre.models.decoding` (greedy for beam size 1, else beam
search) as a `tf.while_loop`, then detokenisation (`Seq2SeqPreprocessor.decode_tf`, stops at
EOS). Both signatures call one inner `tf.function`, so the decoding loop
is traced and stored once.

With `settings.xla` (the default, as in `t5pre predict`) the decoding (encoder and loop, ids in,
ids out) is a `tf.function(jit_compile=True)` of its own inside the graph: XLA compiles it when
a shape is first served, so the batch is padded in the graph to the shapes `compile_decoder`
pads to (`padded_batch_size` rows, `padded_width` tokens) and the padding rows are cut off
again; a batch of several rows is decoded as two halves at once, as `compile_decoder` does on
CPU. Tokenisation stays outside it (tensorflow-text's ops have no XLA kernels).

Why a plain `tf.Module` rather than `keras.export.ExportArchive`: the module holds exactly what
serving needs (the weights as a flat variable list, the tokenizer resource, two functions), its
signatures return named outputs, and nothing Keras-specific is needed to load it: a consumer
imports `tensorflow` and `tensorflow_text` (for the SentencePiece ops) and nothing else.
"""

from __future__ import annotations

import tensorflow as tf

from t5pre.models.decoding import (MAX_PARTS, decode, padded_batch_size, padded_sizes,
                                   padded_width)
from t5pre.models.preprocessing import Seq2SeqPreprocessor

SERVING_SIGNATURE = "serving_default"
IDS_SIGNATURE = "generate_ids"
INPUT_NAME = "inputs"


def generated_lengths(ids, eos_id):
    """Tokens up to and including the first EOS (the full length when there is none)."""
    is_eos = tf.cast(tf.equal(ids, eos_id), tf.int32)
    before_or_at = tf.cast(tf.equal(tf.cumsum(is_eos, axis=1, exclusive=True), 0), tf.int32)
    return tf.reduce_sum(before_or_at, axis=1)


def build_serving_module(model, vocabulary, settings) -> tf.Module:
    """A tf.Module with `serving_default` and `generate_ids` functions (see module docstring).

    `settings` is a resolved `t5pre.models.decode_settings.DecodeSettings` (lengths set). The
    model's variables are tracked as a flat list (not the Keras object graph), which keeps the SavedModel
    free of Keras objects.
    """
    # A private vocabulary object, so that the exported tokenizer is a resource of its own and
    # not one that an earlier tf.data pipeline in this process created and owns.
    vocabulary = type(vocabulary)(vocabulary.serialized_model, extra_ids=vocabulary.extra_ids)
    max_input_length = int(settings.max_input_length)
    preprocessor = Seq2SeqPreprocessor(vocabulary, max_input_length)
    decode_kwargs = settings.decode_kwargs()
    eos_id = int(vocabulary.eos_id)
    text_spec = tf.TensorSpec([None], tf.string, name=INPUT_NAME)

    module = tf.Module(name="t5pre_serving")
    module.model_variables = list(model.variables)
    module.tokenizer = vocabulary.tf_tokenizer  # its resource (the spm model) is saved with it
    module.max_input_length = tf.Variable(max_input_length, trainable=False, name="max_input_length")
    module.max_decode_length = tf.Variable(int(settings.max_decode_length), trainable=False,
                                           name="max_decode_length")
    module.beam_size = tf.Variable(int(settings.beam_size), trainable=False, name="beam_size")

    xla = bool(settings.xla)

    @tf.function(jit_compile=xla, autograph=False)
    def decode_ids(ids, mask):
        return decode(model, ids, mask, **decode_kwargs)

    def padded_decode(ids, mask, width):
        """decode_ids on `ids` padded to a batch bucket x `width`, padding rows cut off."""
        rows = tf.shape(ids)[0]
        shape = tf.stack([_padded(rows, padded_sizes(1 << 16, padded_batch_size)), width])
        padding = tf.stack([tf.zeros([2], tf.int32), shape - tf.shape(ids)], axis=1)
        tokens, scores = decode_ids(tf.pad(ids, padding), tf.pad(mask, padding))
        return tokens[:rows], scores[:rows]

    # As compile_decoder: a batch of several rows is decoded as two parts at once (two XLA
    # calls the graph's executor runs side by side), so that both cores of a 2-core CPU work
    # through the whole decode; sampling draws its noise by row position and is not split.
    parts = MAX_PARTS if xla and not settings.sample else 1

    @tf.function(input_signature=[text_spec], autograph=False)
    def generate(inputs):
        ids, mask = preprocessor.encode_tf(inputs)
        if not xla:
            tokens, scores = decode_ids(ids, mask)
        else:
            width = _padded(tf.shape(ids)[1], padded_sizes(max_input_length, padded_width))
            rows = tf.shape(ids)[0]
            whole = lambda: padded_decode(ids, mask, width)  # noqa: E731
            if parts == 1:
                tokens, scores = whole()
            else:
                half = (rows + 1) // 2

                def halves():
                    first = padded_decode(ids[:half], mask[:half], width)
                    second = padded_decode(ids[half:], mask[half:], width)
                    return (tf.concat([first[0], second[0]], 0),
                            tf.concat([first[1], second[1]], 0))

                tokens, scores = tf.cond(rows > 1, halves, whole)
        return tf.cast(tokens, tf.int32), tf.cast(scores, tf.float32)

    @tf.function(input_signature=[text_spec], autograph=False)
    def serve_text(inputs):
        tokens, scores = generate(inputs)
        return {"outputs": preprocessor.decode_tf(tokens), "scores": scores}

    @tf.function(input_signature=[text_spec], autograph=False)
    def serve_ids(inputs):
        tokens, scores = generate(inputs)
        return {"ids": tokens, "scores": scores, "lengths": generated_lengths(tokens, eos_id)}

    # Kept off the module's tracked attributes: a tf.function attribute would be saved a second
    # time as an object-graph function (doubling the graph); the signatures are all we serve.
    module._t5pre_signatures = {SERVING_SIGNATURE: serve_text, IDS_SIGNATURE: serve_ids}
    return module


def _padded(size, sizes):
    """The first of `sizes` (ascending) >= `size`, in the graph (`size` itself past the end)."""
    table = tf.constant(sizes, tf.int32)
    index = tf.searchsorted(table, tf.reshape(size, [1]), side="left")[0]
    return tf.maximum(tf.gather(table, tf.minimum(index, len(sizes) - 1)), size)


def signatures(module) -> dict:
    """The concrete functions to save as SavedModel signatures."""
    return {name: fn.get_concrete_function() for name, fn in module._t5pre_signatures.items()}
