"""The denoising objectives in numpy, no TensorFlow: their one implementation.

What :mod:`t5pre.data.denoising`'s objectives run on every path (T5's span corruption: exact noise
and span counts from :func:`~t5pre.data.denoising.noise_counts`, span lengths a uniformly random
composition, the mask alternating non-noise/noise, optional random roll; prefix-LM; i.i.d.
denoising), but every random number is a counter-based hash of an *example key*
(:func:`t5pre.data.index_sampler.hash_u64`), which the pipeline derives from
``(seed, pass, position of the chunk in the data)``. So an example's corruption depends on that
triple only: not on batch sizes, worker counts or what was read before.

Functions work on a block ``tokens[rows, length]`` of equal-length chunks and return *rows*:
``(values, lengths)``, the concatenation of the per-row outputs and their lengths.
"""

from __future__ import annotations

import numpy as np

from t5pre.data.index_sampler import hash_u64

# Distinct hash streams of one example key.
_NOISE, _KEEP, _ROLL, _SPLIT, _SELECT, _KIND, _TOKEN = range(7)


def _uniform(keys, stream, shape_tail):
    """Floats in [0, 1) of shape ``[rows, *shape_tail]`` from the example keys."""
    position = np.arange(int(np.prod(shape_tail)), dtype=np.uint64).reshape(shape_tail)
    bits = hash_u64(keys.reshape((-1,) + (1,) * len(shape_tail)), stream, position)
    return (bits >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def random_compositions(keys, stream, total: int, parts: int) -> np.ndarray:
    """``[rows, parts]``: per row a uniformly random composition of ``total`` into ``parts``
    positive integers (``parts - 1`` distinct cut points among the ``total - 1`` gaps)."""
    rows = keys.shape[0]
    if parts <= 1:
        return np.full((rows, 1), total, np.int64)
    gaps = hash_u64(keys[:, None], stream, np.arange(total - 1, dtype=np.uint64)[None, :])
    cuts = np.argpartition(gaps, total - parts, axis=1)[:, total - parts:] + 1
    cuts.sort(axis=1)
    bounds = np.concatenate([np.zeros((rows, 1), np.int64), cuts,
                             np.full((rows, 1), total, np.int64)], axis=1)
    return np.diff(bounds, axis=1)


def span_noise_masks(keys, length: int, num_noise: int, num_spans: int,
                     random_roll: bool = False) -> np.ndarray:
    """``[rows, length]`` bool masks: keep_0, noise_0, keep_1, noise_1, ... (T5's layout)."""
    keys = np.asarray(keys, np.uint64)
    rows = keys.shape[0]
    noise = random_compositions(keys, _NOISE, num_noise, num_spans)
    keep = random_compositions(keys, _KEEP, length - num_noise, num_spans)
    runs = np.stack([keep, noise], axis=2).reshape(rows, -1)
    pattern = np.tile(np.array([False, True]), rows * num_spans)
    masks = np.repeat(pattern, runs.reshape(-1)).reshape(rows, length)
    if random_roll:
        shifts = (hash_u64(keys, _ROLL) % np.uint64(length)).astype(np.int64)
        positions = (np.arange(length)[None, :] - shifts[:, None]) % length
        masks = np.take_along_axis(masks, positions, axis=1)
    return masks


def span_corrupt_rows(tokens: np.ndarray, masks: np.ndarray, vocab_size: int):
    """Each noise span -> one sentinel (``vocab_size - 1 - i``) in the inputs; the targets hold
    sentinel ``i`` then span ``i``. Returns ``(inputs_rows, targets_rows)`` without EOS."""
    rows = tokens.shape[0]
    previous = np.concatenate([np.zeros((rows, 1), bool), masks[:, :-1]], axis=1)
    first = masks & ~previous
    sentinels = vocab_size - np.cumsum(first, axis=1, dtype=np.int64)
    pairs = np.stack([sentinels, tokens.astype(np.int64)], axis=2).reshape(rows, -1)
    keep_inputs = np.stack([first, ~masks], axis=2).reshape(rows, -1)
    keep_targets = np.stack([first, masks], axis=2).reshape(rows, -1)
    return ((pairs[keep_inputs], keep_inputs.sum(axis=1)),
            (pairs[keep_targets], keep_targets.sum(axis=1)))


def prefix_lm_rows(tokens: np.ndarray, keys, max_prefix: int, max_rest: int):
    """Random split point per row, both sides fitting; ``(prefix_rows, rest_rows)``."""
    tokens = tokens[:, : max_prefix + max_rest].astype(np.int64)
    rows, length = tokens.shape
    low, high = max(1, length - max_rest), min(length - 1, max_prefix)
    splits = low + (hash_u64(np.asarray(keys, np.uint64), _SPLIT)
                    % np.uint64(high - low + 1)).astype(np.int64)
    in_prefix = np.arange(length)[None, :] < splits[:, None]
    return ((tokens[in_prefix], splits), (tokens[~in_prefix], length - splits))


def iid_rows(tokens: np.ndarray, keys, noise_density: float, mask_rate: float,
             random_rate: float, mask_id: int, low: int, high: int):
    """BERT-style corruption: ``(corrupted_rows, original_rows)``."""
    keys = np.asarray(keys, np.uint64)
    tokens = tokens.astype(np.int64)
    tail = tokens.shape[1:]
    selected = _uniform(keys, _SELECT, tail) < noise_density
    kind = _uniform(keys, _KIND, tail)
    random_tokens = low + (_uniform(keys, _TOKEN, tail) * (high - low)).astype(np.int64)
    replaced = np.where(kind < mask_rate, mask_id,
                        np.where(kind < mask_rate + random_rate, random_tokens, tokens))
    corrupted = np.where(selected, replaced, tokens)
    lengths = np.full(tokens.shape[0], tokens.shape[1], np.int64)
    return (corrupted.reshape(-1), lengths), (tokens.reshape(-1), lengths)


def split_rows(rows) -> list:
    """``(values, lengths)`` -> a list of 1-D arrays."""
    values, lengths = rows
    return np.split(values, np.cumsum(lengths)[:-1])


__all__ = ["random_compositions", "span_noise_masks", "span_corrupt_rows", "prefix_lm_rows",
           "iid_rows", "split_rows"]
