"""Step-addressable example order: a global example index -> (pass, position in the data).

Nothing here needs TensorFlow. The order is a pure function of ``(seed, global index)``, so any
example of any pass is found in O(1) time and memory (no shuffle buffer, no skip): a resume at
step 1,000,000 costs what a resume at step 0 costs, and any number of workers can split the
global order between them exactly (see :func:`pipeline_indices`).

* :func:`hash_u64` - a counter-based hash (SplitMix64's finaliser chained over the words): the
  random numbers of an example are ``hash_u64(seed, pass, index, stream, position)``, never a
  stateful generator, so they do not depend on batch sizes or worker counts.
* :class:`IndexSampler` - global index ``i`` -> pass ``i // n`` and a position given by a seeded
  bijection of ``[0, n)`` per pass (a 4-round Feistel network over the next even power of two,
  cycle-walking back into range), or the identity without shuffling.
"""

from __future__ import annotations

import numpy as np

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MASK64 = (1 << 64) - 1


def _u64(x) -> np.ndarray:
    if isinstance(x, (int, np.integer)):
        return np.asarray(int(x) & _MASK64, np.uint64)
    return np.asarray(x).astype(np.uint64, copy=False)


def _mix(x: np.ndarray) -> np.ndarray:
    x = x ^ (x >> np.uint64(30))
    x = x * _M1
    x = x ^ (x >> np.uint64(27))
    x = x * _M2
    return x ^ (x >> np.uint64(31))


def hash_u64(*words) -> np.ndarray:
    """A 64-bit hash of the broadcast ``words`` (ints or integer arrays), element by element."""
    with np.errstate(over="ignore"):
        h = np.asarray(0x243F6A8885A308D3, np.uint64)
        for word in words:
            h = _mix(h ^ (_u64(word) + _GOLDEN))
        return np.asarray(h, np.uint64)


class IndexSampler:
    """Maps global example indices to ``(pass, position)`` over ``num_items`` items.

    Args:
        num_items: items per pass (chunks or documents), >= 1.
        seed: the permutation's seed (one bijection per pass).
        shuffle: permute within each pass; otherwise position = index mod ``num_items``.
    """

    ROUNDS = 4

    def __init__(self, num_items: int, seed: int = 0, shuffle: bool = True):
        if int(num_items) < 1:
            raise ValueError(f"an index sampler needs at least one item, got {num_items}")
        self.num_items = int(num_items)
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        bits = max(2, int(self.num_items - 1).bit_length())
        bits += bits % 2
        self._half = np.uint64(bits // 2)
        self._half_mask = np.uint64((1 << (bits // 2)) - 1)

    def _feistel(self, x: np.ndarray, passes: np.ndarray) -> np.ndarray:
        left, right = x >> self._half, x & self._half_mask
        for r in range(self.ROUNDS):
            f = hash_u64(self.seed, passes, r, right) & self._half_mask
            left, right = right, left ^ f
        return (left << self._half) | right

    def permute(self, positions, passes) -> np.ndarray:
        """The seeded bijection of pass ``passes`` applied to ``positions`` (arrays, broadcast)."""
        x = _u64(positions).copy()
        passes = np.broadcast_to(_u64(passes), x.shape)
        n = np.uint64(self.num_items)
        todo = np.ones(x.shape, bool)
        while todo.any():  # cycle walking: the domain is < 4n, so a few rounds at most
            x[todo] = self._feistel(x[todo], passes[todo])
            todo = x >= n
        return x.astype(np.int64)

    def __call__(self, indices) -> tuple[np.ndarray, np.ndarray]:
        """``(pass, position)`` int64 arrays of the global example ``indices``."""
        indices = np.asarray(indices, np.int64)
        if (indices < 0).any():
            raise ValueError("example indices must be >= 0")
        passes, positions = np.divmod(indices, self.num_items)
        if self.shuffle:
            positions = self.permute(positions, passes)
        return passes, positions


def pipeline_indices(batch: int, *, start: int, global_batch_size: int, pipeline: int,
                     pipelines: int, per_replica_batch_size: int) -> np.ndarray:
    """Global example indices of the ``batch``-th per-replica batch that input pipeline
    ``pipeline`` (of ``pipelines``) yields, resuming at global example ``start``.

    Step ``s`` consumes ``[start + s*G, start + (s+1)*G)`` in full whatever the number of
    pipelines: pipeline ``w`` serves its ``r = G / (B * pipelines)`` local replicas in turn, and
    its ``k``-th batch is replica slot ``w*r + k % r`` of step ``k // r``. So changing the number of
    workers or hosts between runs resumes exactly (elastic re-sharding).
    """
    per_step = global_batch_size // (per_replica_batch_size * pipelines)
    if per_step * per_replica_batch_size * pipelines != global_batch_size:
        raise ValueError(
            f"global batch {global_batch_size} is not divisible into {pipelines} pipelines of "
            f"per-replica batches of {per_replica_batch_size}")
    step, slot = divmod(int(batch), per_step)
    first = start + step * global_batch_size + (pipeline * per_step + slot) * per_replica_batch_size
    return np.arange(first, first + per_replica_batch_size, dtype=np.int64)


__all__ = ["hash_u64", "IndexSampler", "pipeline_indices"]
