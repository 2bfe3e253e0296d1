"""Task examples (``inputs``/``targets`` token ids) -> fixed-length encoder-decoder model features.

The contract (docs/architecture.md, "Model features"): for lengths ``{"inputs": N, "targets": M}``
every output example holds, int32 unless stated,

* ``encoder_token_ids[N]``, ``encoder_padding_mask[N]`` (1 = real token)
* ``decoder_token_ids[M]`` (targets shifted right with 0 as the start id; per segment when packed),
  ``decoder_padding_mask[M]``, ``decoder_target_ids[M]``, ``decoder_loss_weights[M]`` (float32,
  0 on padding)
* with ``pack=True`` also ``encoder_segment_ids``, ``encoder_positions``,
  ``decoder_segment_ids``, ``decoder_positions`` (segments from 1, 0 = padding; positions restart
  at 0 in every segment).

Packing is greedy "next fit": examples are appended to the open sequence pair while both the
encoder and the decoder side still fit; the first that does not closes it and opens the next.
It runs over blocks of ``PACKING_BLOCK`` (128) consecutive examples, a pair never spanning two
blocks: a vectorised step per block instead of a pipeline step per example.
An example is never split across two packed sequences (examples longer than the lengths are
trimmed first). Ends of examples are tracked by their *lengths*, never by looking for id 0, so a
0 inside an example survives packing intact. Segment ``k`` of the encoder and segment ``k`` of the
decoder always come from the same example.

Everything is tf.data ops: per block of examples, a scalar scan assigns bins and a handful of
vectorised ragged ops build all the features; nothing runs per token or in Python.
"""

from __future__ import annotations

from typing import Mapping

from t5pre.errors import ConfigError, DataError

ENCODER_DECODER_FEATURES = (
    "encoder_token_ids", "encoder_padding_mask", "decoder_token_ids", "decoder_padding_mask",
    "decoder_target_ids", "decoder_loss_weights",
)
PACKING_BLOCK = 128  # examples converted (and packed) together; a packed row never spans blocks
PACKING_FEATURES = ("encoder_segment_ids", "encoder_positions", "decoder_segment_ids",
                    "decoder_positions")


def _lengths(sequence_length: Mapping[str, int]) -> tuple[int, int]:
    try:
        inputs_length = int(sequence_length["inputs"])
        targets_length = int(sequence_length["targets"])
    except (KeyError, TypeError, ValueError):
        raise ConfigError(
            "feature converter needs sequence_length={'inputs': N, 'targets': M} with integers, "
            f"got {sequence_length!r}") from None
    if inputs_length < 1 or targets_length < 1:
        raise ConfigError(f"sequence lengths must be >= 1, got {dict(sequence_length)}")
    return inputs_length, targets_length


class EncDecFeatureConverter:
    """Convert ``inputs``/``targets`` examples to encoder-decoder model features (see module doc).

    Args:
        pack: pack several examples into one sequence pair (segment ids and positions added).
    """

    def __init__(self, pack: bool = False):
        self.pack = bool(pack)

    def __repr__(self):
        return f"EncDecFeatureConverter(pack={self.pack})"

    def __call__(self, dataset, sequence_length: Mapping[str, int]):
        import tensorflow as tf

        inputs_length, targets_length = _lengths(sequence_length)
        spec = dataset.element_spec
        missing = [k for k in ("inputs", "targets") if not isinstance(spec, Mapping) or k not in spec]
        if missing:
            present = sorted(spec) if isinstance(spec, Mapping) else type(spec).__name__
            raise DataError(f"feature converter: examples lack {missing} (they have {present})")
        pack = self.pack

        def trim(example):
            return (tf.cast(tf.reshape(example["inputs"], [-1]), tf.int32)[:inputs_length],
                    tf.cast(tf.reshape(example["targets"], [-1]), tf.int32)[:targets_length])

        def convert_block(inputs, targets):
            inputs, targets = _as_ragged(inputs), _as_ragged(targets)
            in_lengths = tf.cast(inputs.row_lengths(), tf.int32)
            tg_lengths = tf.cast(targets.row_lengths(), tf.int32)
            if pack:
                bins = _next_fit_bins(in_lengths, tg_lengths, inputs_length, targets_length)
            else:
                bins = tf.range(tf.size(in_lengths))
            return _block_features(inputs, targets, bins, inputs_length, targets_length, pack)

        # Examples go through in blocks: one vectorised step builds the features of a whole
        # block (a per-example step would cost more than everything upstream of it).
        return (dataset.map(trim, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
                .ragged_batch(PACKING_BLOCK)
                .map(convert_block, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
                .unbatch())


def _as_ragged(block):
    import tensorflow as tf

    return block if isinstance(block, tf.RaggedTensor) else tf.RaggedTensor.from_tensor(block)


def _side_features(tokens, bins, num_bins, length):
    """Per-token values of one side (encoder or decoder) of a block, and a densifier.

    ``tokens`` is ragged ``[examples, None]``; ``bins[e]`` the output row of example ``e``
    (non-decreasing). Returns flat ``positions`` and ``segment_ids`` (aligned with
    ``tokens.flat_values``) and ``dense(flat) -> [num_bins, length]`` (zero padded).
    """
    import tensorflow as tf

    lengths = tf.cast(tokens.row_lengths(), tf.int32)
    per_example = tf.ragged.range(lengths)  # 0..len-1 for each example
    positions = per_example.flat_values
    example_of_token = tf.cast(per_example.value_rowids(), tf.int32)
    examples = tf.range(tf.size(lengths))
    first_in_bin = tf.math.unsorted_segment_min(examples, bins, num_bins)
    segment_of_example = examples - tf.gather(first_in_bin, bins) + 1
    segment_ids = tf.gather(segment_of_example, example_of_token)
    bin_of_token = tf.gather(bins, example_of_token)

    def dense(flat):
        grouped = tf.RaggedTensor.from_value_rowids(flat, bin_of_token, nrows=num_bins,
                                                    validate=False)
        return grouped.to_tensor(default_value=0, shape=[None, length])

    return positions, segment_ids, dense


def _block_features(inputs, targets, bins, inputs_length, targets_length, pack):
    """Model features ``[num_bins, length]`` for a block of examples assigned to ``bins``."""
    import tensorflow as tf

    num_bins = bins[-1] + 1
    enc_positions, enc_segments, enc_dense = _side_features(inputs, bins, num_bins, inputs_length)
    dec_positions, dec_segments, dec_dense = _side_features(targets, bins, num_bins,
                                                            targets_length)
    encoder = inputs.flat_values
    decoder = targets.flat_values
    # Shift right within each example: position 0 of every segment gets the start id 0.
    shifted = tf.concat([[0], decoder[:-1]], axis=0)[: tf.size(decoder)]
    decoder_inputs = tf.where(dec_positions == 0, tf.zeros_like(shifted), shifted)
    dec_real = dec_dense(tf.ones_like(decoder))
    out = {
        "encoder_token_ids": enc_dense(encoder),
        "encoder_padding_mask": enc_dense(tf.ones_like(encoder)),
        "decoder_token_ids": dec_dense(decoder_inputs),
        "decoder_padding_mask": dec_real,
        "decoder_target_ids": dec_dense(decoder),
        "decoder_loss_weights": tf.cast(dec_real, tf.float32),
    }
    if pack:
        out.update({
            "encoder_segment_ids": enc_dense(enc_segments),
            "encoder_positions": enc_dense(enc_positions),
            "decoder_segment_ids": dec_dense(dec_segments),
            "decoder_positions": dec_dense(dec_positions),
        })
    return out


def _next_fit_bins(inputs_lengths, targets_lengths, inputs_length: int, targets_length: int):
    """Bin index of each example under greedy next-fit (a new bin when either side overflows)."""
    import tensorflow as tf

    def step(state, lengths):
        bin_index, used_in, used_tg = state
        n_in, n_tg = lengths
        fits = tf.logical_and(used_in + n_in <= inputs_length, used_tg + n_tg <= targets_length)
        opens = tf.logical_and(tf.logical_not(fits), used_in + used_tg > 0)
        bin_index = tf.where(opens, bin_index + 1, bin_index)
        used_in = tf.where(fits, used_in + n_in, n_in)
        used_tg = tf.where(fits, used_tg + n_tg, n_tg)
        return bin_index, used_in, used_tg

    zero = tf.constant(0, tf.int32)
    bins, _, _ = tf.scan(step, (inputs_lengths, targets_lengths), initializer=(zero, zero, zero))
    return bins
