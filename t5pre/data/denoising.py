"""Denoising objectives for pretraining: span corruption, prefix-LM, i.i.d. (BERT-style), UL2.

Every objective takes a chunk of raw token ids (the ``"targets"`` feature that
:mod:`t5pre.data.chunking` emits, no EOS) and turns it into an ``inputs``/``targets`` pair. All
randomness comes from stateless TF random ops seeded from the preprocessor's ``ctx.seed``, the
position in the stream (of a block of ``BLOCK_SIZE`` chunks processed together) and a fingerprint
of the tokens, so a pipeline is reproducible (same seed, same examples), resumable from an
iterator checkpoint, and runs entirely inside ``tf.data``.

Span corruption (T5), precisely:

* For a chunk of ``length`` tokens, ``num_noise = round(length * density)`` (float32, ties to
  even, as T5 computes it), clamped to ``[1, length - 1]``; ``num_spans = round(num_noise / mean)``
  clamped to ``[1, min(num_noise, length - num_noise)]``. The upper clamp is what keeps high
  densities with short spans valid: a chunk cannot hold more noise spans than it has
  separating non-noise tokens.
* Span lengths are a uniformly random *composition* of the noise tokens into exactly
  ``num_spans`` positive parts, and likewise for the non-noise tokens (not Poisson draws).
  The mask alternates non-noise, noise, non-noise, ... so it starts with non-noise and ends with
  noise (T5's layout). ``random_roll=True`` rotates the mask by a random offset to remove that
  bias; a roll can split the wrapped-around span in two, so one extra sentinel is budgeted.
* ``inputs`` = the tokens with each noise span replaced by one sentinel ``<extra_id_i>``
  (``vocab_size - 1 - i``, counting down in span order); ``targets`` = ``<extra_id_i>`` followed
  by span ``i``, for every span in order. EOS is appended to both (when the output feature asks
  for it). A configuration that needs more sentinels than the vocabulary's ``extra_ids`` is
  refused with a :class:`~t5pre.errors.ConfigError` before any data flows, so a sentinel can
  never collide with a regular token.

:func:`random_spans_helper` gives the raw chunk length whose corrupted inputs exactly fit an
inputs length (512, 0.15, 3.0 -> 568 raw tokens, 114 targets).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping, Sequence

import numpy as np

from t5pre.errors import ConfigError

EOS_ID = 1  # T5 layout; used only when a context carries no vocabulary.

# Paradigm prefixes UL2 prepends to the inputs of each denoiser (encoded as plain text pieces).
UL2_PARADIGM_PREFIXES = {"R": "[NLU]", "X": "[NLG]", "S": "[S2S]"}


# --------------------------------------------------------------------------------------------
# Length arithmetic (pure Python, float32 rounding identical to the TF ops below)
# --------------------------------------------------------------------------------------------


def _round_f32(x: np.float32) -> int:
    """Round half to even in float32, like ``tf.math.round`` on a float32 tensor."""
    return int(np.round(np.float32(x)))


def _check_noise_params(noise_density: float, mean_noise_span_length: float) -> None:
    if not 0.0 < float(noise_density) < 1.0:
        raise ConfigError(f"noise_density must be in (0, 1), got {noise_density}")
    if not float(mean_noise_span_length) >= 1.0:
        raise ConfigError(f"mean_noise_span_length must be >= 1, got {mean_noise_span_length}")


def noise_counts(length: int, noise_density: float, mean_noise_span_length: float) -> tuple[int, int]:
    """``(num_noise_tokens, num_noise_spans)`` that :func:`random_spans_noise_mask` uses for ``length``.

    Pure Python mirror of the TF computation (same float32 arithmetic), so that lengths computed
    at pipeline-build time agree exactly with what the mask does per example.
    """
    if length < 2:
        raise ConfigError(f"span corruption needs at least 2 tokens, got a length of {length}")
    num_noise = _round_f32(np.float32(length) * np.float32(noise_density))
    num_noise = min(max(num_noise, 1), length - 1)
    num_spans = _round_f32(np.float32(num_noise) / np.float32(mean_noise_span_length))
    num_spans = max(1, min(num_spans, num_noise, length - num_noise))
    return num_noise, num_spans


def _corrupted_lengths(tokens_length, noise_density, mean_noise_span_length, extra_in, extra_tg):
    """(inputs_length, targets_length) incl. EOS of span corruption over ``tokens_length`` tokens."""
    num_noise, num_spans = noise_counts(tokens_length, noise_density, mean_noise_span_length)
    return (
        tokens_length - num_noise + num_spans * extra_in + 1,
        num_noise + num_spans * extra_tg + 1,
    )


def _t5_lengths(tokens_length, noise_density, mean_noise_span_length, extra_in, extra_tg):
    """T5's own length arithmetic: Python ``round`` in float64, no clamping."""
    num_noise = int(round(tokens_length * float(noise_density)))
    num_spans = int(round(num_noise / float(mean_noise_span_length)))
    return (tokens_length - num_noise + num_spans * extra_in + 1,
            num_noise + num_spans * extra_tg + 1)


def random_spans_helper(
    inputs_length: int,
    noise_density: float,
    mean_noise_span_length: float,
    extra_tokens_per_span_inputs: int = 1,
    extra_tokens_per_span_targets: int = 1,
) -> tuple[int, int]:
    """T5's ``random_spans_helper``, value for value: ``(tokens_length, targets_length)``.

    Starts from ``inputs_length`` raw tokens and grows while the next length still fits the
    inputs (T5's float64 rounding, no clamping); at density 0.5, when the targets would exceed the
    inputs, both are shortened by one (T5's "targets = inputs" hack), e.g.
    ``(512, 0.15, 3.0) -> (568, 114)`` and ``(512, 0.5, 3.0) -> (766, 512)``.
    The pipeline does not trust this blindly: :func:`span_corruption_tokens_length` starts here and
    checks the fit with the mask's own (float32, clamped) counts.

    Raises:
        ConfigError: the inputs length is too short for a single sentinel (``< 3``: one kept
            token, one sentinel, EOS) or the noise parameters are out of range.
    """
    _check_noise_params(noise_density, mean_noise_span_length)
    if int(inputs_length) < 3:
        raise ConfigError(
            f"inputs length {inputs_length} is too short for span corruption: it needs room for at "
            "least one kept token, one sentinel and EOS (>= 3)"
        )
    args = (noise_density, mean_noise_span_length,
            extra_tokens_per_span_inputs, extra_tokens_per_span_targets)
    tokens_length = int(inputs_length)
    while _t5_lengths(tokens_length + 1, *args)[0] <= inputs_length:
        tokens_length += 1
    inputs, targets = _t5_lengths(tokens_length, *args)
    if float(noise_density) == 0.5 and targets > inputs:
        tokens_length -= 1
        targets -= 1
    return tokens_length, targets


def _fits(tokens_length, inputs_length, targets_length, noise_density, mean_noise_span_length,
          extra_spans):
    """Whether the mask's own counts (float32, clamped) make both outputs fit."""
    if tokens_length < 2:
        return False
    inputs, targets = _corrupted_lengths(tokens_length, noise_density, mean_noise_span_length, 1, 1)
    return (inputs + extra_spans <= inputs_length
            and (targets_length is None or targets + extra_spans <= targets_length))


def span_corruption_tokens_length(
    inputs_length: int,
    targets_length: int | None,
    noise_density: float,
    mean_noise_span_length: float,
    extra_spans: int = 0,
) -> int:
    """The raw chunk length the pipeline cuts: T5's :func:`random_spans_helper` value, shortened
    until the corrupted inputs *and* targets (with EOS) both fit by the mask's own counts.

    With T5's settings that is T5's value (the inputs bind); with high densities (UL2's
    X-denoiser) the targets bind and the chunk is shortened until they fit as well.
    ``extra_spans`` budgets sentinels a random roll may add (see module docstring).
    """
    args = (inputs_length, targets_length, noise_density, mean_noise_span_length, extra_spans)
    tokens_length = random_spans_helper(inputs_length - extra_spans, noise_density,
                                        mean_noise_span_length)[0]
    # T5's value is the starting point; the fit check uses the counts the mask will use.
    while tokens_length >= 2 and not _fits(tokens_length, *args):
        tokens_length -= 1
    if tokens_length < 2:
        raise ConfigError(
            f"targets length {targets_length} is too short for span corruption with noise density "
            f"{noise_density} (it needs room for a sentinel, a noise token and EOS)"
        )
    return tokens_length


# --------------------------------------------------------------------------------------------
# TF ops: masks and sentinel replacement
# --------------------------------------------------------------------------------------------


from t5pre.lazy import tensorflow as _tf  # noqa: E402


def _seed_tensor(seeds):
    tf = _tf()
    seeds = tf.convert_to_tensor(seeds)
    if seeds.dtype not in (tf.int32, tf.int64):
        seeds = tf.cast(seeds, tf.int64)
    if seeds.shape.rank == 0:
        seeds = tf.stack([seeds, tf.zeros_like(seeds)])
    return seeds


def _noise_counts_tf(length, noise_density, mean_noise_span_length):
    tf = _tf()
    num_noise = tf.cast(tf.math.round(tf.cast(length, tf.float32) * noise_density), tf.int32)
    num_noise = tf.clip_by_value(num_noise, 1, length - 1)
    num_spans = tf.cast(
        tf.math.round(tf.cast(num_noise, tf.float32) / mean_noise_span_length), tf.int32)
    num_spans = tf.maximum(1, tf.minimum(num_spans, tf.minimum(num_noise, length - num_noise)))
    return num_noise, num_spans


def random_spans_noise_mask(length, noise_density, mean_noise_span_length, seeds,
                            random_roll: bool = False):
    """Boolean noise mask ``[length]`` with T5's span semantics (see the module docstring).

    Args:
        length: int or scalar int tensor, >= 2.
        noise_density: fraction of tokens that are noise.
        mean_noise_span_length: average noise span length.
        seeds: a stateless seed, shape ``[2]`` int (or a scalar, widened to ``[seed, 0]``).
        random_roll: rotate the mask by a uniformly random offset (removes T5's bias that the
            mask starts with non-noise and ends with noise; may split one span in two).

    Deterministic given ``seeds``; pure TF, so it works inside ``tf.data`` maps.
    """
    tf = _tf()
    mask = random_spans_noise_masks(1, length, noise_density, mean_noise_span_length, seeds,
                                    random_roll)[0]
    return tf.ensure_shape(mask, [None])


def span_corrupt(tokens, noise_mask, vocab_size):
    """Replace noise spans by unique sentinels: ``(inputs, targets)`` without EOS.

    ``inputs``: kept tokens, each noise span replaced by ``vocab_size - 1 - i`` (span ``i`` in
    order of appearance). ``targets``: for each span ``i``, that sentinel followed by the span's
    tokens. Works for any mask (also rolled ones that start with noise).
    """
    tf = _tf()
    tokens = tf.convert_to_tensor(tokens)
    noise_mask = tf.convert_to_tensor(noise_mask, tf.bool)
    previous = tf.concat([[False], noise_mask[:-1]], axis=0)
    first_noise = tf.logical_and(noise_mask, tf.logical_not(previous))
    span_index = tf.cumsum(tf.cast(first_noise, tokens.dtype)) - 1
    sentinels = tf.cast(vocab_size, tokens.dtype) - 1 - span_index
    # Each position contributes [sentinel?, token?]; keep masks select what each side emits.
    pairs = tf.reshape(tf.stack([sentinels, tokens], axis=1), [-1])
    keep_inputs = tf.reshape(tf.stack([first_noise, tf.logical_not(noise_mask)], axis=1), [-1])
    keep_targets = tf.reshape(tf.stack([first_noise, noise_mask], axis=1), [-1])
    return tf.boolean_mask(pairs, keep_inputs), tf.boolean_mask(pairs, keep_targets)


def _random_compositions(total, parts, rows, seed):
    """``[rows, parts]``: per row, a uniformly random composition of ``total`` into ``parts``
    positive integers.

    Picks ``parts - 1`` distinct cut points among the ``total - 1`` gaps uniformly at random
    (the top-k of uniform keys), which makes every composition equally likely.
    """
    tf = _tf()
    keys = tf.random.stateless_uniform([rows, total - 1], seed=seed)
    cuts = tf.sort(tf.math.top_k(keys, k=parts - 1, sorted=False).indices + 1, axis=-1)
    bounds = tf.concat([tf.zeros([rows, 1], tf.int32), cuts, tf.fill([rows, 1], total)], axis=1)
    return bounds[:, 1:] - bounds[:, :-1]


def _masks_from_span_lengths(keep_lengths, noise_lengths, length):
    """``[rows, length]`` masks laid out keep_0, noise_0, keep_1, noise_1, ... per row.

    +1 at each noise span's start and -1 at its end, then a running sum: a few vectorised ops
    (``tf.repeat`` over the spans was the slowest step of the whole pipeline).
    """
    tf = _tf()
    rows = tf.shape(keep_lengths)[0]
    starts = tf.cumsum(keep_lengths, axis=1) + tf.cumsum(noise_lengths, axis=1, exclusive=True)
    ends = starts + noise_lengths
    row_ids = tf.broadcast_to(tf.range(rows)[:, None], tf.shape(starts))
    indices = tf.stack([tf.concat([row_ids, row_ids], 1), tf.concat([starts, ends], 1)], axis=-1)
    updates = tf.concat([tf.ones_like(starts), -tf.ones_like(ends)], axis=1)
    delta = tf.scatter_nd(tf.reshape(indices, [-1, 2]), tf.reshape(updates, [-1]),
                          tf.stack([rows, length + 1]))
    return tf.cumsum(delta, axis=1)[:, :length] > 0


def random_spans_noise_masks(rows, length, noise_density, mean_noise_span_length, seeds,
                             random_roll: bool = False):
    """``[rows, length]`` independent masks with :func:`random_spans_noise_mask`'s semantics.

    The vectorised form used on blocks of equal-length chunks: one set of ops for many chunks.
    """
    tf = _tf()
    length = tf.convert_to_tensor(length, tf.int32)
    rows = tf.convert_to_tensor(rows, tf.int32)
    seed = _seed_tensor(seeds)
    num_noise, num_spans = _noise_counts_tf(
        length, np.float32(noise_density), np.float32(mean_noise_span_length))
    seed_noise, seed_keep, seed_roll = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    noise_lengths = _random_compositions(num_noise, num_spans, rows, seed_noise)
    keep_lengths = _random_compositions(length - num_noise, num_spans, rows, seed_keep)
    masks = _masks_from_span_lengths(keep_lengths, noise_lengths, length)
    if random_roll:
        shifts = tf.random.stateless_uniform([rows], seed=seed_roll, minval=0, maxval=length,
                                             dtype=tf.int32)
        positions = tf.math.floormod(tf.range(length)[None, :] - shifts[:, None], length)
        masks = tf.gather(masks, positions, batch_dims=1)
    return masks


def span_corrupt_batch(tokens, noise_masks, vocab_size):
    """:func:`span_corrupt` over ``[rows, length]`` tokens and masks -> ragged (inputs, targets)."""
    tf = _tf()
    tokens = tf.convert_to_tensor(tokens)
    noise_masks = tf.convert_to_tensor(noise_masks, tf.bool)
    rows = tf.shape(tokens)[0]
    previous = tf.concat([tf.zeros([rows, 1], tf.bool), noise_masks[:, :-1]], axis=1)
    first_noise = tf.logical_and(noise_masks, tf.logical_not(previous))
    span_index = tf.cumsum(tf.cast(first_noise, tokens.dtype), axis=1) - 1
    sentinels = tf.cast(vocab_size, tokens.dtype) - 1 - span_index
    pairs = tf.reshape(tf.stack([sentinels, tokens], axis=2), [rows, -1])
    keep_inputs = tf.reshape(
        tf.stack([first_noise, tf.logical_not(noise_masks)], axis=2), [rows, -1])
    keep_targets = tf.reshape(tf.stack([first_noise, noise_masks], axis=2), [rows, -1])
    return _ragged_select(pairs, keep_inputs), _ragged_select(pairs, keep_targets)


def _ragged_select(values, keep):
    """Rows of ``values[keep]`` as a RaggedTensor (cheaper than ``tf.ragged.boolean_mask``)."""
    tf = _tf()
    lengths = tf.reduce_sum(tf.cast(keep, tf.int64), axis=1)
    return tf.RaggedTensor.from_row_lengths(tf.boolean_mask(values, keep), lengths,
                                            validate=False)


# --------------------------------------------------------------------------------------------
# Objectives as preprocessors fn(ds, ctx)
# --------------------------------------------------------------------------------------------


def _feature(ctx, key):
    features = getattr(ctx, "output_features", None) or {}
    return features.get(key)


def _vocabulary(ctx, key):
    feature = _feature(ctx, key)
    vocabulary = getattr(feature, "vocabulary", None)
    if vocabulary is None:
        raise ConfigError(f"denoising needs output_features[{key!r}] with a vocabulary")
    return vocabulary


def _add_eos(ctx, key) -> bool:
    feature = _feature(ctx, key)
    return True if feature is None else bool(getattr(feature, "add_eos", True))


def _eos_id(ctx, key) -> int:
    feature = _feature(ctx, key)
    return int(getattr(getattr(feature, "vocabulary", None), "eos_id", EOS_ID))


def _sequence_lengths(ctx, who: str) -> tuple[int, int]:
    lengths = getattr(ctx, "sequence_length", None) or {}
    try:
        return int(lengths["inputs"]), int(lengths["targets"])
    except (KeyError, TypeError):
        raise ConfigError(
            f"{who} needs sequence_length with 'inputs' and 'targets' lengths, got {lengths!r}"
        ) from None


def _block_seed(base_seed, index, tokens):
    """Stateless seed of a block of chunks: the preprocessor seed, the block's position in the
    stream and a fingerprint of its tokens.

    Folding in a fingerprint of the tokens keeps masks independent across data shards, whose
    stream positions coincide.
    """
    tf = _tf()
    fingerprint = tf.bitcast(tf.fingerprint(tf.expand_dims(tokens, 0))[0], tf.int64)
    seed = tf.random.experimental.stateless_fold_in(base_seed, index)
    return tf.random.experimental.stateless_fold_in(seed, fingerprint)


BLOCK_SIZE = 64  # chunks corrupted together in one vectorised step


class DenoisingObjective:
    """A preprocessor ``fn(ds, ctx)`` turning raw token chunks into inputs/targets pairs.

    Subclasses implement :meth:`corrupt` (TF, one chunk, no EOS), optionally its vectorised form
    :meth:`corrupt_batch` (a block of equal-length chunks; set ``vectorised = True``), and
    :meth:`raw_tokens_length` (the chunk length that makes the outputs fit
    ``ctx.sequence_length``), which the chunking preprocessor reads
    (:func:`t5pre.data.chunking.split_into_chunks` accepts an objective).

    ``prefix`` (optional text, e.g. UL2's ``[NLU]``) is tokenized with the inputs vocabulary and
    prepended to every ``inputs``; its length is taken out of the inputs budget.
    """

    name = "denoising"

    def __init__(self, prefix: str | None = None, feature_key: str = "targets"):
        self.prefix = prefix
        self.feature_key = feature_key

    # -- lengths ---------------------------------------------------------------------------
    def _prefix_ids(self, ctx) -> list[int]:
        if not self.prefix:
            return []
        return list(_vocabulary(ctx, "inputs").encode(self.prefix))

    def _budgets(self, ctx) -> tuple[int, int]:
        """Inputs/targets lengths left for the objective itself (prefix taken out)."""
        inputs_length, targets_length = _sequence_lengths(ctx, f"objective {self.name!r}")
        return inputs_length - len(self._prefix_ids(ctx)), targets_length

    def raw_tokens_length(self, ctx) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def check(self, ctx) -> None:
        """Build-time validation (sentinel budget and the like); raise ConfigError."""

    def corrupt(self, tokens, seed, ctx_values):  # pragma: no cover - abstract
        raise NotImplementedError

    def _ctx_values(self, ctx) -> dict:
        """Static values corrupt() needs, computed once per pipeline."""
        return {}

    # -- preprocessor ----------------------------------------------------------------------
    vectorised = False  # True when corrupt_batch is implemented

    def corrupt_batch(self, tokens, seed, ctx_values):  # pragma: no cover - optional
        """Vectorised :meth:`corrupt` over a dense ``[batch, length]`` block of equal-length
        chunks; returns ragged ``(inputs, targets)`` (int64 row splits)."""
        raise NotImplementedError

    def corrupt_rows_numpy(self, tokens, keys, values):  # pragma: no cover - abstract
        """Numpy twin of :meth:`corrupt_batch`: ``tokens[rows, length]``, one uint64 key per row
        -> ``(inputs_rows, targets_rows)`` as ``(values, lengths)`` (see
        :mod:`t5pre.data.denoising_numpy`)."""
        raise NotImplementedError

    def numpy_corruptor(self, ctx):
        """``fn(tokens[rows, length], keys[rows]) -> (inputs list, targets list)`` of int32 arrays
        with the prefix and EOS added: the objective without TensorFlow (cached pipeline)."""
        from t5pre.data.denoising_numpy import split_rows

        self.check(ctx)
        values = self._ctx_values(ctx)
        prefix = np.asarray(self._prefix_ids(ctx), np.int32)
        eos_in = [_eos_id(ctx, "inputs")] if _add_eos(ctx, "inputs") else []
        eos_tg = [_eos_id(ctx, "targets")] if _add_eos(ctx, "targets") else []
        max_tokens = self.raw_tokens_length(ctx)

        def corrupt(tokens, keys):
            inputs, targets = self.corrupt_rows_numpy(np.asarray(tokens)[:, :max_tokens],
                                                      np.asarray(keys, np.uint64), values)
            return ([np.concatenate([prefix, row, eos_in]).astype(np.int32)
                     for row in split_rows(inputs)],
                    [np.concatenate([row, eos_tg]).astype(np.int32) for row in split_rows(targets)])

        return corrupt

    def _corrupt_rows(self, block, seed, values):
        """Fallback for blocks of unequal lengths (the last chunk of a pass): one row at a time."""
        tf = _tf()
        rows = block.nrows(out_type=tf.int32)
        arrays = [tf.TensorArray(tf.int32, size=rows, infer_shape=False) for _ in range(4)]

        def body(i, inputs_values, inputs_lengths, targets_values, targets_lengths):
            row_seed = tf.random.experimental.stateless_fold_in(seed, i)
            inputs, targets = self.corrupt(block[i], row_seed, values)
            return (i + 1,
                    inputs_values.write(i, inputs), inputs_lengths.write(i, tf.size(inputs)[None]),
                    targets_values.write(i, targets),
                    targets_lengths.write(i, tf.size(targets)[None]))

        _, iv, il, tv, tl = tf.while_loop(lambda i, *_: i < rows, body, [0] + arrays)

        def ragged(values_array, lengths_array):
            return tf.RaggedTensor.from_row_lengths(
                values_array.concat(), tf.cast(lengths_array.concat(), tf.int64), validate=False)

        return ragged(iv, il), ragged(tv, tl)

    def __call__(self, dataset, ctx):
        """Apply the objective to ``{feature_key: chunk}`` examples; outputs inputs/targets.

        Chunks are processed in blocks of ``BLOCK_SIZE`` (vectorised over a block when all its
        chunks have the same length, which is every block but the last of a pass), so the
        per-example cost is a fraction of a tf.data step. Every block draws its randomness from
        ``ctx.seed``, its position in the stream and a fingerprint of its tokens.
        """
        tf = _tf()
        self.check(ctx)
        values = self._ctx_values(ctx)
        prefix = tf.constant(self._prefix_ids(ctx), tf.int32)
        eos_inputs = _add_eos(ctx, "inputs")
        eos_targets = _add_eos(ctx, "targets")
        eos_in = _eos_id(ctx, "inputs")
        eos_tg = _eos_id(ctx, "targets")
        base_seed = tf.constant([int(getattr(ctx, "seed", 0) or 0), _stable_hash(self.name)],
                                tf.int64)
        key = self.feature_key
        minimum = self.min_tokens

        def keep(example):
            return tf.size(example[key]) >= minimum

        # Longer inputs (documents not cut by the chunker) are trimmed so the outputs still fit.
        max_tokens = self.raw_tokens_length(ctx)

        def chunk(example):
            return tf.cast(tf.reshape(example[key], [-1]), tf.int32)[:max_tokens]

        def apply(index, block):
            if not isinstance(block, tf.RaggedTensor):
                block = tf.RaggedTensor.from_tensor(block)
            seed = _block_seed(base_seed, index, block.flat_values)
            lengths = tf.cast(block.row_lengths(), tf.int32)
            uniform = tf.reduce_all(tf.equal(lengths, lengths[0]))
            if self.vectorised:
                inputs, targets = tf.cond(
                    uniform,
                    lambda: self.corrupt_batch(
                        tf.reshape(block.flat_values, [tf.size(lengths), -1]), seed, values),
                    lambda: self._corrupt_rows(block, seed, values))
            else:
                inputs, targets = self._corrupt_rows(block, seed, values)
            rows = tf.size(lengths)
            parts_in = [tf.RaggedTensor.from_tensor(tf.tile(prefix[None], [rows, 1])), inputs]
            parts_tg = [targets]
            if eos_inputs:
                parts_in.append(tf.RaggedTensor.from_tensor(tf.fill([rows, 1], eos_in)))
            if eos_targets:
                parts_tg.append(tf.RaggedTensor.from_tensor(tf.fill([rows, 1], eos_tg)))
            return {"inputs": tf.concat(parts_in, axis=1), "targets": tf.concat(parts_tg, axis=1)}

        return (dataset.filter(keep).map(chunk).ragged_batch(BLOCK_SIZE).enumerate()
                .map(apply, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
                .unbatch())

    min_tokens = 2


def _stable_hash(text: str) -> int:
    """A small process-independent hash (Python's hash() is salted per process)."""
    value = 0
    for ch in text.encode():
        value = (value * 131 + ch) % (2**31 - 1)
    return value


class SpanCorruption(DenoisingObjective):
    """T5's span corruption (see the module docstring)."""

    def __init__(self, noise_density: float = 0.15, mean_noise_span_length: float = 3.0,
                 random_roll: bool = False, prefix: str | None = None, name: str | None = None,
                 feature_key: str = "targets"):
        super().__init__(prefix=prefix, feature_key=feature_key)
        _check_noise_params(noise_density, mean_noise_span_length)
        self.noise_density = float(noise_density)
        self.mean_noise_span_length = float(mean_noise_span_length)
        self.random_roll = bool(random_roll)
        self.name = name or f"span_corruption(d={noise_density},mu={mean_noise_span_length})"

    def raw_tokens_length(self, ctx) -> int:
        inputs_length, targets_length = self._budgets(ctx)
        return span_corruption_tokens_length(
            inputs_length, targets_length, self.noise_density, self.mean_noise_span_length,
            extra_spans=1 if self.random_roll else 0)

    def max_sentinels(self, ctx) -> int:
        """Most sentinels one example can need at this context's lengths."""
        # num_noise, length - num_noise and so num_spans never decrease with the length, so a
        # full-length chunk needs the most (shorter final chunks need at most as many).
        length = self.raw_tokens_length(ctx)
        spans = noise_counts(length, self.noise_density, self.mean_noise_span_length)[1]
        return spans + (1 if self.random_roll else 0)

    def check(self, ctx) -> None:
        for key in ("inputs", "targets"):
            vocabulary = _vocabulary(ctx, key)
            needed = self.max_sentinels(ctx)
            available = int(vocabulary.extra_ids)
            if needed > available:
                lengths = getattr(ctx, "sequence_length", None)
                raise ConfigError(
                    f"objective {self.name}: sequence_length {lengths} needs up to {needed} "
                    f"sentinels but the {key!r} vocabulary has only {available} extra_ids; use a "
                    f"vocabulary with extra_ids >= {needed}, shorter sequences, a lower noise "
                    "density or longer spans (a sentinel beyond extra_ids would be a real token)"
                )
        if int(_vocabulary(ctx, "inputs").vocab_size) != int(_vocabulary(ctx, "targets").vocab_size):
            raise ConfigError(f"objective {self.name}: inputs and targets must share a vocabulary")

    def _ctx_values(self, ctx) -> dict:
        return {"vocab_size": int(_vocabulary(ctx, "targets").vocab_size)}

    def corrupt(self, tokens, seed, values):
        tf = _tf()
        mask = random_spans_noise_mask(tf.size(tokens), self.noise_density,
                                       self.mean_noise_span_length, seed, self.random_roll)
        return span_corrupt(tokens, mask, values["vocab_size"])

    vectorised = True

    def corrupt_batch(self, tokens, seed, values):
        tf = _tf()
        shape = tf.shape(tokens)
        masks = random_spans_noise_masks(shape[0], shape[1], self.noise_density,
                                         self.mean_noise_span_length, seed, self.random_roll)
        return span_corrupt_batch(tokens, masks, values["vocab_size"])


    def corrupt_rows_numpy(self, tokens, keys, values):
        from t5pre.data import denoising_numpy

        num_noise, num_spans = noise_counts(tokens.shape[1], self.noise_density,
                                            self.mean_noise_span_length)
        masks = denoising_numpy.span_noise_masks(keys, tokens.shape[1], num_noise, num_spans,
                                                 self.random_roll)
        return denoising_numpy.span_corrupt_rows(tokens, masks, values["vocab_size"])


class PrefixLM(DenoisingObjective):
    """Prefix language modelling: a random split point; inputs = prefix, targets = the rest.

    The chunk length is ``max(N, M) - 1`` (N, M: inputs/targets lengths, EOS excluded) and the
    split point is uniform over the positions that make both sides fit (``[T - (M-1), N-1]``
    intersected with ``[1, T-1]``), so no token is ever trimmed. With T5's 512/114 the targets are
    the last 1..113 tokens of a 511-token chunk.
    """

    min_tokens = 2

    def __init__(self, prefix: str | None = None, name: str = "prefix_lm",
                 feature_key: str = "targets"):
        super().__init__(prefix=prefix, feature_key=feature_key)
        self.name = name

    def raw_tokens_length(self, ctx) -> int:
        inputs_length, targets_length = self._budgets(ctx)
        if inputs_length < 2 or targets_length < 2:
            raise ConfigError(
                f"objective {self.name}: inputs and targets lengths must leave room for one "
                f"token and EOS each, got {getattr(ctx, 'sequence_length', None)}")
        return max(inputs_length, targets_length) - 1

    def _ctx_values(self, ctx) -> dict:
        inputs_length, targets_length = self._budgets(ctx)
        return {"max_prefix": inputs_length - 1, "max_rest": targets_length - 1}

    def corrupt(self, tokens, seed, values):
        tf = _tf()
        tokens = tokens[: values["max_prefix"] + values["max_rest"]]
        length = tf.size(tokens)
        low = tf.maximum(1, length - values["max_rest"])
        high = tf.minimum(length - 1, values["max_prefix"])
        split = tf.random.stateless_uniform([], seed=seed, minval=low, maxval=high + 1,
                                            dtype=tf.int32)
        return tokens[:split], tokens[split:]

    vectorised = True

    def corrupt_batch(self, tokens, seed, values):
        tf = _tf()
        tokens = tokens[:, : values["max_prefix"] + values["max_rest"]]
        rows, length = tf.shape(tokens)[0], tf.shape(tokens)[1]
        low = tf.maximum(1, length - values["max_rest"])
        high = tf.minimum(length - 1, values["max_prefix"])
        splits = tf.random.stateless_uniform([rows], seed=seed, minval=low, maxval=high + 1,
                                             dtype=tf.int32)
        in_prefix = tf.range(length)[None, :] < splits[:, None]
        return (_ragged_select(tokens, in_prefix),
                _ragged_select(tokens, tf.logical_not(in_prefix)))


    def corrupt_rows_numpy(self, tokens, keys, values):
        from t5pre.data import denoising_numpy

        return denoising_numpy.prefix_lm_rows(tokens, keys, values["max_prefix"],
                                              values["max_rest"])


class IIDDenoising(DenoisingObjective):
    """BERT-style i.i.d. denoising: targets are the original tokens.

    Each token is selected independently with probability ``noise_density``; a selected token is
    replaced by the mask token (``<extra_id_0>``) with probability ``mask_rate``, by a random
    regular piece (never pad/EOS/UNK or a sentinel) with probability ``random_rate``, and kept
    otherwise. Chunk length ``min(N, M) - 1`` so inputs and targets (with EOS) both fit.
    """

    def __init__(self, noise_density: float = 0.15, mask_rate: float = 0.8,
                 random_rate: float = 0.1, name: str = "iid_denoising",
                 prefix: str | None = None, feature_key: str = "targets"):
        super().__init__(prefix=prefix, feature_key=feature_key)
        if not 0.0 < noise_density < 1.0:
            raise ConfigError(f"noise_density must be in (0, 1), got {noise_density}")
        if mask_rate < 0 or random_rate < 0 or mask_rate + random_rate > 1:
            raise ConfigError(f"mask_rate + random_rate must lie in [0, 1], got "
                              f"{mask_rate} + {random_rate}")
        self.noise_density = float(noise_density)
        self.mask_rate = float(mask_rate)
        self.random_rate = float(random_rate)
        self.name = name
        self.min_tokens = 1

    def raw_tokens_length(self, ctx) -> int:
        inputs_length, targets_length = self._budgets(ctx)
        length = min(inputs_length, targets_length) - 1
        if length < 1:
            raise ConfigError(f"objective {self.name}: sequence_length "
                              f"{getattr(ctx, 'sequence_length', None)} leaves no room for tokens")
        return length

    def check(self, ctx) -> None:
        vocabulary = _vocabulary(ctx, "inputs")
        if int(vocabulary.extra_ids) < 1:
            raise ConfigError(f"objective {self.name}: the vocabulary needs an extra id for the "
                              "mask token")

    def _ctx_values(self, ctx) -> dict:
        vocabulary = _vocabulary(ctx, "inputs")
        return {"mask_id": int(vocabulary.sentinel(0)), "low": 3,
                "high": int(vocabulary.vocab_size) - int(vocabulary.extra_ids)}

    def _corrupt_dense(self, tokens, seed, values):
        """Elementwise, so the same code serves one chunk ``[length]`` and a block ``[rows, length]``."""
        tf = _tf()
        shape = tf.shape(tokens)
        seed_select, seed_kind, seed_token = tf.unstack(
            tf.random.experimental.stateless_split(seed, 3))
        selected = tf.random.stateless_uniform(shape, seed=seed_select) < self.noise_density
        kind = tf.random.stateless_uniform(shape, seed=seed_kind)
        random_tokens = tf.random.stateless_uniform(
            shape, seed=seed_token, minval=values["low"], maxval=values["high"], dtype=tf.int32)
        replaced = tf.where(kind < self.mask_rate, values["mask_id"],
                            tf.where(kind < self.mask_rate + self.random_rate, random_tokens,
                                     tokens))
        return tf.where(selected, replaced, tokens)

    def corrupt(self, tokens, seed, values):
        return self._corrupt_dense(tokens, seed, values), tokens

    vectorised = True

    def corrupt_batch(self, tokens, seed, values):
        tf = _tf()
        return (tf.RaggedTensor.from_tensor(self._corrupt_dense(tokens, seed, values)),
                tf.RaggedTensor.from_tensor(tokens))


    def corrupt_rows_numpy(self, tokens, keys, values):
        from t5pre.data import denoising_numpy

        return denoising_numpy.iid_rows(tokens, keys, self.noise_density, self.mask_rate,
                                        self.random_rate, values["mask_id"], values["low"],
                                        values["high"])


# --------------------------------------------------------------------------------------------
# Factories (the names used in task preprocessor lists)
# --------------------------------------------------------------------------------------------


def span_corruption(noise_density: float = 0.15, mean_noise_span_length: float = 3.0,
                    random_roll: bool = False, prefix: str | None = None,
                    name: str | None = None) -> SpanCorruption:
    """T5 span corruption preprocessor ``fn(ds, ctx)`` (defaults: density 0.15, mean span 3)."""
    return SpanCorruption(noise_density, mean_noise_span_length, random_roll, prefix, name)


def prefix_lm(prefix: str | None = None) -> PrefixLM:
    """Prefix-LM preprocessor ``fn(ds, ctx)``."""
    return PrefixLM(prefix=prefix)


def iid_denoising(noise_density: float = 0.15, mask_rate: float = 0.8,
                  random_rate: float = 0.1) -> IIDDenoising:
    """BERT-style i.i.d. denoising preprocessor ``fn(ds, ctx)``."""
    return IIDDenoising(noise_density, mask_rate, random_rate)


@dataclasses.dataclass(frozen=True)
class UL2Denoiser:
    """One denoiser of UL2's mixture: a short name, its objective and its mixing rate."""

    name: str
    objective: DenoisingObjective
    rate: float


def ul2_denoisers(paradigm_prefixes: bool = True,
                  rates: Mapping[str, float] | None = None) -> list[UL2Denoiser]:
    """UL2's mixture of denoisers: R (mean 3, density 0.15), X (mean 32 / 0.15 and 3 / 0.5), S.

    With ``paradigm_prefixes`` each denoiser's inputs begin with its paradigm token as plain text
    (``[NLU]`` for R, ``[NLG]`` for X, ``[S2S]`` for S), tokenized by the vocabulary into ordinary
    pieces (no special ids are reserved for them); without, inputs carry no marker.
    The X-denoiser with density 0.5 needs many sentinels: at 512 inputs ~128 spans, more than 100
    extra ids, which :meth:`SpanCorruption.check` refuses; pick lengths or extra_ids to match.
    """
    def prefix(kind):
        return UL2_PARADIGM_PREFIXES[kind] if paradigm_prefixes else None

    rates = dict({"r": 0.4, "x_long_spans": 0.1, "x_dense": 0.1, "s": 0.4}, **(rates or {}))
    return [
        UL2Denoiser("r", SpanCorruption(0.15, 3.0, prefix=prefix("R"), name="ul2_r"), rates["r"]),
        UL2Denoiser("x_long_spans", SpanCorruption(0.15, 32.0, prefix=prefix("X"),
                                                   name="ul2_x_long_spans"), rates["x_long_spans"]),
        UL2Denoiser("x_dense", SpanCorruption(0.5, 3.0, prefix=prefix("X"), name="ul2_x_dense"),
                    rates["x_dense"]),
        UL2Denoiser("s", PrefixLM(prefix=prefix("S"), name="ul2_s"), rates["s"]),
    ]


OBJECTIVES: dict[str, Callable[..., DenoisingObjective]] = {
    "span_corruption": span_corruption,
    "prefix_lm": prefix_lm,
    "iid_denoising": iid_denoising,
}


def make_objective(name: str, **kwargs) -> DenoisingObjective:
    """Objective by name (``span_corruption``, ``prefix_lm``, ``iid_denoising``)."""
    try:
        factory = OBJECTIVES[name]
    except KeyError:
        raise ConfigError(f"unknown objective {name!r}; choose one of {sorted(OBJECTIVES)}") from None
    try:
        return factory(**kwargs)
    except TypeError as e:
        raise ConfigError(f"objective {name!r}: {e}") from None


__all__: Sequence[str] = [
    "random_spans_helper", "random_spans_noise_mask", "random_spans_noise_masks", "span_corrupt",
    "span_corrupt_batch", "noise_counts",
    "span_corruption_tokens_length", "DenoisingObjective", "SpanCorruption",
    "PrefixLM", "IIDDenoising", "span_corruption", "prefix_lm", "iid_denoising", "ul2_denoisers",
    "UL2Denoiser", "make_objective", "UL2_PARADIGM_PREFIXES",
]
