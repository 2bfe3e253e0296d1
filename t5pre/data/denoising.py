"""Denoising objectives for pretraining: span corruption, prefix-LM, i.i.d. (BERT-style), UL2.

Every objective takes a chunk of raw token ids (the ``"targets"`` feature that
:mod:`t5pre.data.chunking` emits, no EOS) and turns it into an ``inputs``/``targets`` pair. Each
objective is written once, in numpy (:mod:`t5pre.data.denoising_numpy`, no TensorFlow): every
random number is a counter-based hash of an example key, which the training path
(:mod:`t5pre.data.random_access`) derives from ``(seed, pass, chunk position)``, so the same seed
and position always give the same example, on every path (``Task.get_dataset``, ``t5pre tasks
show`` and training read the same examples). This module holds the length arithmetic, the
objective classes and T5-named wrappers (:func:`random_spans_noise_mask`, :func:`span_corrupt`)
over the numpy code.

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
# Length arithmetic (pure Python, float32 rounding as T5 computes it)
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
# Masks and sentinel replacement (T5 names over the numpy implementation)
# --------------------------------------------------------------------------------------------


from t5pre.lazy import tensorflow as _tf  # noqa: E402


def _keys(rows: int, seeds) -> np.ndarray:
    """One uint64 example key per row from a seed (an int or a sequence of ints)."""
    from t5pre.data.index_sampler import hash_u64

    words = [int(x) for x in np.ravel(np.asarray(seeds, np.int64))]
    return hash_u64(*words, np.arange(int(rows), dtype=np.uint64))


def random_spans_noise_masks(rows, length, noise_density, mean_noise_span_length, seeds,
                             random_roll: bool = False) -> np.ndarray:
    """``[rows, length]`` bool noise masks with T5's span semantics (module docstring), row ``r``
    keyed by ``(seeds, r)``: :func:`t5pre.data.denoising_numpy.span_noise_masks`, the one
    implementation the training path runs.

    ``random_roll`` rotates each mask by a uniformly random offset (removes T5's bias that the
    mask starts with non-noise and ends with noise; may split one span in two)."""
    from t5pre.data import denoising_numpy

    num_noise, num_spans = noise_counts(int(length), noise_density, mean_noise_span_length)
    return denoising_numpy.span_noise_masks(_keys(rows, seeds), int(length), num_noise,
                                            num_spans, random_roll)


def random_spans_noise_mask(length, noise_density, mean_noise_span_length, seeds,
                            random_roll: bool = False) -> np.ndarray:
    """One ``[length]`` mask of :func:`random_spans_noise_masks` (deterministic given ``seeds``)."""
    return random_spans_noise_masks(1, length, noise_density, mean_noise_span_length, seeds,
                                    random_roll)[0]


def span_corrupt_batch(tokens, noise_masks, vocab_size) -> tuple[list, list]:
    """Noise spans -> sentinels over ``[rows, length]`` tokens and masks: ``(inputs, targets)``
    lists of 1-D arrays without EOS (:func:`t5pre.data.denoising_numpy.span_corrupt_rows`)."""
    from t5pre.data import denoising_numpy

    tokens = np.asarray(tokens)
    inputs, targets = denoising_numpy.span_corrupt_rows(tokens, np.asarray(noise_masks, bool),
                                                        int(vocab_size))
    return ([r.astype(tokens.dtype) for r in denoising_numpy.split_rows(inputs)],
            [r.astype(tokens.dtype) for r in denoising_numpy.split_rows(targets)])


def span_corrupt(tokens, noise_mask, vocab_size) -> tuple[np.ndarray, np.ndarray]:
    """Replace noise spans by unique sentinels: ``(inputs, targets)`` without EOS.

    ``inputs``: kept tokens, each noise span replaced by ``vocab_size - 1 - i`` (span ``i`` in
    order of appearance). ``targets``: for each span ``i``, that sentinel followed by the span's
    tokens. Works for any mask (also rolled ones that start with noise).
    """
    inputs, targets = span_corrupt_batch(np.asarray(tokens)[None], np.asarray(noise_mask)[None],
                                         vocab_size)
    return inputs[0], targets[0]


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


BLOCK_SIZE = 64  # chunks corrupted together in one numpy call


class DenoisingObjective:
    """A preprocessor ``fn(ds, ctx)`` turning raw token chunks into inputs/targets pairs.

    Subclasses implement :meth:`corrupt_rows_numpy` (numpy, a block of equal-length chunks, one
    uint64 key per chunk, no EOS: the one implementation, run by the random-access training path
    and by this preprocessor alike) and
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

    def _ctx_values(self, ctx) -> dict:
        """Static values corrupt_rows_numpy() needs, computed once per pipeline."""
        return {}

    # -- preprocessor ----------------------------------------------------------------------
    def corrupt_rows_numpy(self, tokens, keys, values):  # pragma: no cover - abstract
        """The objective: ``tokens[rows, length]``, one uint64 key per row
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

    def __call__(self, dataset, ctx):
        """Apply the objective to ``{feature_key: chunk}`` examples; outputs inputs/targets.

        For a task whose objective does not follow ``split_into_chunks`` (training reads a
        chunked pretraining task by index and runs :meth:`numpy_corruptor` itself): the same
        numpy code in ``tf.numpy_function``, over blocks of ``BLOCK_SIZE`` chunks; chunk ``r`` of
        block ``b`` is keyed by ``(ctx.seed, objective name, b, r)``, so the stream is
        reproducible for a seed.
        """
        from t5pre.data.index_sampler import hash_u64

        tf = _tf()
        corrupt = self.numpy_corruptor(ctx)
        seed = int(getattr(ctx, "seed", 0) or 0)
        name = _stable_hash(self.name)
        key = self.feature_key
        minimum = self.min_tokens
        # Longer inputs (documents not cut by the chunker) are trimmed so the outputs still fit.
        max_tokens = self.raw_tokens_length(ctx)

        def keep(example):
            return tf.size(example[key]) >= minimum

        def chunk(example):
            return tf.cast(tf.reshape(example[key], [-1]), tf.int32)[:max_tokens]

        def corrupt_block(index, flat, lengths):
            rows = np.split(flat, np.cumsum(lengths)[:-1])
            keys = hash_u64(seed, name, int(index), np.arange(len(rows), dtype=np.uint64))
            inputs, targets = [None] * len(rows), [None] * len(rows)
            for length in np.unique(lengths):  # equal-length rows in one call
                picked = np.flatnonzero(lengths == length)
                block_in, block_tg = corrupt(np.stack([rows[i] for i in picked]), keys[picked])
                for i, a, b in zip(picked, block_in, block_tg):
                    inputs[i], targets[i] = a, b
            return (np.concatenate(inputs), np.array([len(r) for r in inputs], np.int64),
                    np.concatenate(targets), np.array([len(r) for r in targets], np.int64))

        def apply(index, block):
            lengths = block.row_lengths()
            values = tf.numpy_function(corrupt_block, [index, block.flat_values, lengths],
                                       [tf.int32, tf.int64, tf.int32, tf.int64], stateful=False)
            for v in values:
                v.set_shape([None])
            return {"inputs": tf.RaggedTensor.from_row_lengths(values[0], values[1]),
                    "targets": tf.RaggedTensor.from_row_lengths(values[2], values[3])}

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
