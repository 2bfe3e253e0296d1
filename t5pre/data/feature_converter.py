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

Everything is tf.data ops (a scalar scan per block, vectorised feature building), no per-token
Python.
"""

from __future__ import annotations

from typing import Mapping

from t5pre.errors import ConfigError, DataError

ENCODER_DECODER_FEATURES = (
    "encoder_token_ids", "encoder_padding_mask", "decoder_token_ids", "decoder_padding_mask",
    "decoder_target_ids", "decoder_loss_weights",
)
PACKING_BLOCK = 128  # examples packed together (bins never span two blocks)
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


def _segments_and_positions(lengths, total):
    """Segment ids (from 1) and positions (restarting at 0) for segments of ``lengths``."""
    import tensorflow as tf

    count = tf.size(lengths)
    segment_ids = tf.repeat(tf.range(1, count + 1, dtype=tf.int32), lengths)
    starts = tf.cumsum(lengths, exclusive=True)
    positions = tf.range(total, dtype=tf.int32) - tf.repeat(starts, lengths)
    return segment_ids, positions


def _pad_to(tensor, length):
    import tensorflow as tf

    padded = tf.pad(tensor, [[0, length - tf.size(tensor)]])
    return tf.ensure_shape(padded, [length])


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

        def trim(example):
            return (tf.cast(tf.reshape(example["inputs"], [-1]), tf.int32)[:inputs_length],
                    tf.cast(tf.reshape(example["targets"], [-1]), tf.int32)[:targets_length])

        pairs = dataset.map(trim, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        if self.pack:
            groups = _pack_next_fit(pairs, inputs_length, targets_length)
        else:
            groups = pairs.map(lambda i, t: (i, tf.size(i)[None], t, tf.size(t)[None]),
                               num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        pack = self.pack

        def features(encoder, encoder_lengths, decoder, decoder_lengths):
            enc_segments, enc_positions = _segments_and_positions(encoder_lengths, tf.size(encoder))
            dec_segments, dec_positions = _segments_and_positions(decoder_lengths, tf.size(decoder))
            shifted = tf.concat([[0], decoder[:-1]], axis=0)[: tf.size(decoder)]
            decoder_inputs = tf.where(dec_positions == 0, tf.zeros_like(shifted), shifted)
            enc_real = tf.ones_like(encoder)
            dec_real = tf.ones_like(decoder)
            out = {
                "encoder_token_ids": _pad_to(encoder, inputs_length),
                "encoder_padding_mask": _pad_to(enc_real, inputs_length),
                "decoder_token_ids": _pad_to(decoder_inputs, targets_length),
                "decoder_padding_mask": _pad_to(dec_real, targets_length),
                "decoder_target_ids": _pad_to(decoder, targets_length),
                "decoder_loss_weights": tf.cast(_pad_to(dec_real, targets_length), tf.float32),
            }
            if pack:
                out.update({
                    "encoder_segment_ids": _pad_to(enc_segments, inputs_length),
                    "encoder_positions": _pad_to(enc_positions, inputs_length),
                    "decoder_segment_ids": _pad_to(dec_segments, targets_length),
                    "decoder_positions": _pad_to(dec_positions, targets_length),
                })
            return out

        return groups.map(features, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


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


def _pack_next_fit(pairs, inputs_length: int, targets_length: int):
    """Group (inputs, targets) pairs greedily; yields (enc, enc_lengths, dec, dec_lengths).

    Packing runs on blocks of ``PACKING_BLOCK`` consecutive examples: one small scalar loop per
    block assigns bins, then the tokens of each bin are gathered with ragged ops. A bin never
    spans two blocks (at most one partly filled bin per block), which keeps the per-example cost
    to a few microseconds instead of a full pipeline step.
    """
    import tensorflow as tf

    def pack_block(inputs, targets):
        if not isinstance(inputs, tf.RaggedTensor):
            inputs = tf.RaggedTensor.from_tensor(inputs)
        if not isinstance(targets, tf.RaggedTensor):
            targets = tf.RaggedTensor.from_tensor(targets)
        in_lengths = tf.cast(inputs.row_lengths(), tf.int32)
        tg_lengths = tf.cast(targets.row_lengths(), tf.int32)
        bins = _next_fit_bins(in_lengths, tg_lengths, inputs_length, targets_length)
        num_bins = bins[-1] + 1

        def group(values, rowids):
            return tf.RaggedTensor.from_value_rowids(values, rowids, nrows=num_bins)

        return (group(inputs.flat_values, tf.repeat(bins, in_lengths)), group(in_lengths, bins),
                group(targets.flat_values, tf.repeat(bins, tg_lengths)), group(tg_lengths, bins))

    return (pairs.ragged_batch(PACKING_BLOCK)
            .map(pack_block, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .unbatch())
