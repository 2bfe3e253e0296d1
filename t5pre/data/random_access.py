"""The random-access input pipeline: global example index -> model features, in O(1), numpy only.

Over a :class:`~t5pre.data.cache.TokenStore` (a cache built by ``t5pre data cache``, or the same
store built in memory), example ``i`` of a pretraining task is:

1. pass ``p = i // N`` and chunk ``j`` = a seeded bijection of ``i mod N`` for pass ``p``
   (:class:`~t5pre.data.index_sampler.IndexSampler`), ``N`` the chunks per pass;
2. the chunk ``stream[s_p + j*L : s_p + (j+1)*L]`` of the documents' concatenation read as a
   ring of ``T`` tokens, ``L`` the objective's raw chunk length and ``s_p in [0, T)`` a per-pass
   shift (0 for pass 0, which so reads the data in order from its first token): every pass
   covers every token once, with new chunk boundaries; the last chunk is the short rest
   (``split_into_chunks``' ``keep_remainder``);
3. the objective in numpy (:meth:`~t5pre.data.denoising.DenoisingObjective.numpy_corruptor`)
   keyed by ``hash(seed, p, j)``: fresh noise every pass, fixed by ``(seed, pass, position)``.

For any other task, example ``i`` is the cached example at the permuted position ``j``.
Nothing depends on what was read before, so a resume at any position costs the same and any
number of input pipelines can split the global order exactly
(:func:`~t5pre.data.index_sampler.pipeline_indices`). :func:`tf_dataset` wraps it for
``tf.distribute``; JAX hosts can call :meth:`RandomAccessTask.features` directly.
"""

from __future__ import annotations

import numpy as np

from t5pre.data.index_sampler import IndexSampler, hash_u64, pipeline_indices
from t5pre.errors import ConfigError, DataError

_SHIFT, _NOISE = 1, 2


class RandomAccessTask:
    """Examples of ``task``'s ``split`` by global index, read from ``store``.

    Args:
        task: the registered task the store was built from.
        store: its :class:`~t5pre.data.cache.TokenStore` for ``split``.
        sequence_length: ``{"inputs": N, "targets": M}``.
        seed: order and noise seed; ``shuffle``: permute each pass (otherwise data order).
    """

    def __init__(self, task, store, sequence_length, split: str, seed: int = 0,
                 shuffle: bool = True):
        from t5pre.data import chunking
        from t5pre.data.cache import pretraining_parts
        from t5pre.data.registry import derive_seed

        self.task, self.store, self.split = task, store, split
        self.sequence_length = {"inputs": int(sequence_length["inputs"]),
                                "targets": int(sequence_length["targets"])}
        self.seed = derive_seed(int(seed), "random_access", task.name)
        stop, chunk_options, objective = pretraining_parts(task)
        self.pretraining = stop is not None
        if self.pretraining:
            ctx = task.context(self.sequence_length, split, seed, shuffle, None, stop + 1)
            self.chunk_length = chunking._resolve_length(chunk_options["tokens_length"], ctx)
            self._corrupt = objective.numpy_corruptor(ctx)
            tokens = store.num_tokens
            minimum = max(2, objective.min_tokens)
            if tokens < minimum:
                raise DataError(f"task {task.name!r} split {split!r}: {tokens} tokens, too few "
                                "for one example")
            self.chunk_length = length = min(self.chunk_length, tokens)
            num_items, remainder = divmod(tokens, length)
            if remainder >= minimum and chunk_options.get("keep_remainder", True):
                num_items += 1  # the short last chunk, as split_into_chunks keeps it
            self.num_tokens = tokens
        else:
            num_items = store.num_documents
            if num_items < 1:
                raise DataError(f"task {task.name!r} split {split!r} has no examples")
        self.num_items = int(num_items)
        self.sampler = IndexSampler(self.num_items, seed=self.seed, shuffle=shuffle)

    def examples(self, indices) -> tuple[list, list]:
        """``(inputs, targets)`` lists of int32 arrays (EOS included) of the global ``indices``."""
        passes, positions = self.sampler(indices)
        if not self.pretraining:
            return ([np.asarray(self.store.document(int(j), "inputs"), np.int32) for j in positions],
                    [np.asarray(self.store.document(int(j), "targets"), np.int32)
                     for j in positions])
        length, total = self.chunk_length, self.num_tokens
        # The stream is read as a ring: pass p starts at shift s_p (0 for pass 0), so every pass
        # covers every token once, with new chunk boundaries; the last chunk is the short rest.
        shifts = (hash_u64(self.seed, _SHIFT, passes) % np.uint64(total)).astype(np.int64)
        shifts[passes == 0] = 0
        offsets = positions * length
        sizes = np.minimum(length, total - offsets)
        tokens = self.store.stream((shifts + offsets) % total, length)
        keys = hash_u64(self.seed, _NOISE, passes, positions)
        if (sizes == length).all():
            return self._corrupt(tokens, keys)
        full = np.flatnonzero(sizes == length)
        inputs, targets = [None] * len(positions), [None] * len(positions)
        groups = [(full, length)] + [(np.array([i]), int(sizes[i]))
                                     for i in np.flatnonzero(sizes != length)]
        for rows, size in groups:
            if len(rows):
                part_in, part_tg = self._corrupt(tokens[rows, :size], keys[rows])
                for row, a, b in zip(rows, part_in, part_tg):
                    inputs[row], targets[row] = a, b
        return inputs, targets

    def features(self, indices, pack: bool = False) -> dict:
        """Model features (the converter's contract, one example per row) of ``indices``."""
        inputs, targets = self.examples(indices)
        return model_features(inputs, targets, self.sequence_length, pack)


def apportion(rates, total: int) -> np.ndarray:
    """Integer slots per rate summing to ``total`` (largest remainders; every positive rate
    gets at least one slot)."""
    rates = np.asarray(rates, np.float64)
    exact = rates / rates.sum() * total
    counts = np.maximum(np.floor(exact).astype(np.int64), (rates > 0).astype(np.int64))
    order = np.argsort(-(exact - np.floor(exact)), kind="stable")
    k = 0
    while counts.sum() < total:
        counts[order[k % len(order)]] += 1
        k += 1
    while counts.sum() > total:
        counts[int(np.argmax(counts))] -= 1
    return counts


class RandomAccessMixture:
    """Examples of a mixture by global index, O(1): each block of ``BLOCK`` consecutive indices
    holds, in a seeded order per block, exactly ``round(rate * BLOCK)`` examples of each task
    (rates resolved to 1/65,536), and the ``r``-th slot of task ``t`` in block ``b`` is example
    ``b * slots_t + r`` of that task's own :class:`RandomAccessTask` (its own order and noise,
    seeded by the mixture seed and its name). Rates are ``mixture.rates()``
    (``rate_num_examples`` included)."""

    BLOCK = 1 << 16

    def __init__(self, mixture, stores: dict, sequence_length, split: str, seed: int = 0,
                 shuffle: bool = True):
        from t5pre.data.registry import derive_seed

        rates = mixture.rates()
        tasks = {t.name: t for t in mixture.tasks}
        self.names = list(rates)
        self.sequence_length = {"inputs": int(sequence_length["inputs"]),
                                "targets": int(sequence_length["targets"])}
        self.parts = [RandomAccessTask(tasks[name], stores[name], sequence_length, split,
                                       seed=derive_seed(int(seed), "mixture", name),
                                       shuffle=shuffle) for name in self.names]
        self.counts = apportion([rates[n] for n in self.names], self.BLOCK)
        self.starts = np.concatenate([[0], np.cumsum(self.counts)]).astype(np.int64)
        self.sampler = IndexSampler(self.BLOCK, seed=derive_seed(int(seed), "sample"),
                                    shuffle=True)

    def task_indices(self, indices) -> tuple[np.ndarray, np.ndarray]:
        """``(task number, index in that task)`` of the global ``indices``."""
        blocks, slots = self.sampler(indices)
        which = np.searchsorted(self.starts, slots, side="right") - 1
        return which, blocks * self.counts[which] + (slots - self.starts[which])

    def examples(self, indices) -> tuple[list, list]:
        which, local = self.task_indices(indices)
        inputs, targets = [None] * len(which), [None] * len(which)
        for t, part in enumerate(self.parts):
            rows = np.flatnonzero(which == t)
            if len(rows):
                part_inputs, part_targets = part.examples(local[rows])
                for row, a, b in zip(rows, part_inputs, part_targets):
                    inputs[row], targets[row] = a, b
        return inputs, targets

    def features(self, indices, pack: bool = False) -> dict:
        inputs, targets = self.examples(indices)
        return model_features(inputs, targets, self.sequence_length, pack)


def _pad(rows, width):
    out = np.zeros((len(rows), width), np.int32)
    lengths = np.zeros(len(rows), np.int64)
    for i, row in enumerate(rows):
        row = row[:width]
        out[i, : len(row)] = row
        lengths[i] = len(row)
    return out, (np.arange(width)[None, :] < lengths[:, None]).astype(np.int32)


def model_features(inputs, targets, sequence_length, pack: bool = False) -> dict:
    """:class:`~t5pre.data.feature_converter.EncDecFeatureConverter`'s features in numpy, one
    example per row (``pack=True`` adds segment ids / positions of that single segment)."""
    encoder, encoder_mask = _pad(inputs, sequence_length["inputs"])
    decoder_targets, decoder_mask = _pad(targets, sequence_length["targets"])
    decoder_inputs = np.zeros_like(decoder_targets)
    decoder_inputs[:, 1:] = decoder_targets[:, :-1]
    decoder_inputs *= decoder_mask
    out = {
        "encoder_token_ids": encoder, "encoder_padding_mask": encoder_mask,
        "decoder_token_ids": decoder_inputs, "decoder_padding_mask": decoder_mask,
        "decoder_target_ids": decoder_targets,
        "decoder_loss_weights": decoder_mask.astype(np.float32),
    }
    if pack:
        for side, mask in (("encoder", encoder_mask), ("decoder", decoder_mask)):
            out[f"{side}_segment_ids"] = mask.copy()
            out[f"{side}_positions"] = (np.arange(mask.shape[1])[None, :] * mask).astype(np.int32)
    return out


def _next_fit_bins(in_lengths, tg_lengths, sequence_length, rows=None) -> tuple[np.ndarray, int]:
    """Row of each example under greedy next fit (a new row when either side overflows), as
    :class:`~t5pre.data.feature_converter.EncDecFeatureConverter` packs; with ``rows``, the
    examples after the last row fills are left out. ``(bins of the placed prefix, rows used)``."""
    n_in, n_tg = sequence_length["inputs"], sequence_length["targets"]
    bins = np.empty(len(in_lengths), np.int64)
    row, used_in, used_tg = 0, 0, 0
    for e, (a, b) in enumerate(zip(in_lengths, tg_lengths)):
        if used_in + used_tg and (used_in + a > n_in or used_tg + b > n_tg):
            row, used_in, used_tg = row + 1, 0, 0
            if rows is not None and row >= rows:
                return bins[:e], rows
        bins[e] = row
        used_in, used_tg = used_in + a, used_tg + b
    return bins, (row + 1 if len(bins) else 0)


def packed_features(inputs, targets, sequence_length, rows: int | None = None) -> tuple[dict, int]:
    """Examples packed into rows by next fit, as ``EncDecFeatureConverter(pack=True)`` packs
    them (trimmed to the lengths first; segment ids from 1, positions restarting in every
    segment, decoder inputs shifted right within a segment). ``rows`` fixes the number of rows
    (the examples that do not fit are left out, trailing rows may stay empty). Returns
    ``(features, examples placed)``: the placed ones are a prefix of the examples."""
    lengths = {"inputs": int(sequence_length["inputs"]), "targets": int(sequence_length["targets"])}
    inputs = [np.asarray(r, np.int32)[: lengths["inputs"]] for r in inputs]
    targets = [np.asarray(r, np.int32)[: lengths["targets"]] for r in targets]
    in_lengths = np.array([len(r) for r in inputs], np.int64)
    tg_lengths = np.array([len(r) for r in targets], np.int64)
    bins, used_rows = _next_fit_bins(in_lengths, tg_lengths, lengths, rows)
    placed = len(bins)
    num_rows = used_rows if rows is None else rows
    out = {}
    for side, rows_of, side_lengths in (("encoder", inputs, in_lengths),
                                        ("decoder", targets, tg_lengths)):
        width = lengths["inputs" if side == "encoder" else "targets"]
        tokens = np.zeros((num_rows, width), np.int32)
        shifted = np.zeros((num_rows, width), np.int32)
        segments = np.zeros((num_rows, width), np.int32)
        positions = np.zeros((num_rows, width), np.int32)
        fill = np.zeros(num_rows, np.int64)
        segment = np.zeros(num_rows, np.int32)
        for e in range(placed):
            row, n = int(bins[e]), int(side_lengths[e])
            segment[row] += 1
            start = int(fill[row])
            tokens[row, start:start + n] = rows_of[e]
            shifted[row, start + 1:start + n] = rows_of[e][:-1]
            segments[row, start:start + n] = segment[row]
            positions[row, start:start + n] = np.arange(n)
            fill[row] += n
        mask = (segments > 0).astype(np.int32)
        if side == "encoder":
            out.update(encoder_token_ids=tokens, encoder_padding_mask=mask)
        else:
            out.update(decoder_token_ids=shifted, decoder_padding_mask=mask,
                       decoder_target_ids=tokens, decoder_loss_weights=mask.astype(np.float32))
        out[f"{side}_segment_ids"] = segments
        out[f"{side}_positions"] = positions
    return out, placed


PACKING_SAMPLE = 4096  # examples read once to choose the examples per packed row
PACKING_GROUP = 32  # rows per simulated batch (fixed: the choice must not depend on batch sizes)
PACKING_MAX_DROPPED = 0.01  # the most examples a choice may leave out (share of the sample)


def packing_factor(pipeline) -> tuple[int, str]:
    """Examples per packed row for ``pipeline`` and a line saying what it costs.

    A training batch of ``B`` rows packs the ``B * F`` consecutive examples of its step's fixed
    index window, so every step's examples are known from its position alone (resume stays
    O(1)); examples that overflow the ``B`` rows are left out. ``F`` is the largest number that
    leaves out at most 1% of a fixed sample (the first 4,096 examples of the stream, in groups of
    32 rows): a function of the data, the lengths and the seed only, so a resume picks the same.
    Chunked pretraining examples fill both lengths: ``F`` is 1 and nothing changes."""
    lengths = pipeline.sequence_length
    sample = np.arange(min(PACKING_SAMPLE, max(pipeline.num_items, 1) * 4), dtype=np.int64)
    inputs, targets = pipeline.examples(sample)
    in_len = np.minimum([len(r) for r in inputs], lengths["inputs"])
    tg_len = np.minimum([len(r) for r in targets], lengths["targets"])

    def dropped(factor):
        group = PACKING_GROUP * factor
        left_out = 0
        for start in range(0, len(sample) - group + 1, group):
            bins, _ = _next_fit_bins(in_len[start:start + group], tg_len[start:start + group],
                                     lengths, PACKING_GROUP)
            left_out += group - len(bins)
        used = (len(sample) // group) * group
        return left_out / used if used else 1.0

    upper = int(max(1, min(lengths["inputs"] / max(in_len.mean(), 1),
                           lengths["targets"] / max(tg_len.mean(), 1))))
    factor = 1
    for candidate in range(min(upper, len(sample) // PACKING_GROUP), 1, -1):
        if dropped(candidate) <= PACKING_MAX_DROPPED:
            factor = candidate
            break
    share = dropped(factor)
    fill_in = min(1.0, factor * in_len.mean() / lengths["inputs"] * (1 - share))
    fill_tg = min(1.0, factor * tg_len.mean() / lengths["targets"] * (1 - share))
    note = (f"data.pack: {factor} example(s) per row (a step packs its {factor} x batch_size "
            f"examples; on the first {len(sample):,} examples {share:.1%} are left out when rows "
            f"overflow; rows filled ~{fill_in:.0%} inputs / ~{fill_tg:.0%} targets)")
    return factor, note


def random_access_pipeline(source, sequence_length, *, split: str, seed: int, shuffle: bool,
                           cache=None, log=print):
    """The :class:`RandomAccessTask` (a task) or :class:`RandomAccessMixture` (a mixture) that
    training reads and ``get_dataset`` serves: example ``i`` of it is example ``i`` of the run's
    stream (``seed``: the run's data seed). Stores come from
    :func:`~t5pre.data.implicit_cache.task_store` (``cache``: a task's configured cache)."""
    from t5pre.data.implicit_cache import task_store

    lengths = {"inputs": int(sequence_length["inputs"]), "targets": int(sequence_length["targets"])}
    if getattr(source, "kind", "task") != "mixture" and not hasattr(source, "rates"):
        store = task_store(source, split, lengths, cache_dir=cache, log=log)
        return RandomAccessTask(source, store, lengths, split, seed=seed, shuffle=shuffle)
    if cache is not None:
        raise ConfigError(f"data.cache_dir: only a task can be read from one cache, "
                          f"{getattr(source, 'name', source)!r} is a mixture (leave "
                          "data.cache_dir unset: each of its tasks gets its own cache)")
    tasks = list(source.tasks)
    nested = [t.name for t in tasks if getattr(t, "kind", "task") == "mixture"]
    if nested:
        raise ConfigError(f"mixture {source.name!r}: training reads mixtures of tasks; "
                          f"{nested} are mixtures (list their tasks instead)")
    stores = {t.name: task_store(t, split, lengths, log=log) for t in tasks}
    return RandomAccessMixture(source, stores, lengths, split, seed=seed, shuffle=shuffle)


def examples_dataset(pipeline, *, shard_info=None, num_epochs=None, block: int = 256):
    """``pipeline``'s examples ``{"inputs", "targets"}`` (int32, 1-D, EOS included) as an unbatched
    ``tf.data.Dataset``, in global index order: what ``get_dataset`` serves, the very examples
    training reads. ``shard_info=(k, n)`` keeps indices ``k, k+n, ...``; ``num_epochs`` stops
    after that many passes (a task's ``num_items`` each), None repeats forever."""
    import tensorflow as tf

    index, count = tuple(shard_info) if shard_info else (0, 1)
    stop = np.iinfo(np.int64).max if num_epochs is None else int(num_epochs) * pipeline.num_items

    def rows(indices):
        inputs, targets = pipeline.examples(np.asarray(indices, np.int64))
        out = []
        for side in (inputs, targets):
            out.append(np.concatenate(side).astype(np.int32) if side else np.zeros(0, np.int32))
            out.append(np.array([len(r) for r in side], np.int64))
        return out

    def to_examples(indices):
        values = tf.numpy_function(rows, [indices], [tf.int32, tf.int64, tf.int32, tf.int64],
                                   stateful=False)
        for v in values:
            v.set_shape([None])
        return {"inputs": tf.RaggedTensor.from_row_lengths(values[0], values[1]),
                "targets": tf.RaggedTensor.from_row_lengths(values[2], values[3])}

    return (tf.data.Dataset.range(int(index), stop, int(count)).batch(block)
            .map(to_examples, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .unbatch())


def tf_dataset(pipeline: RandomAccessTask, *, start_examples: int, global_batch_size: int,
               input_context=None, pack: bool = False, take_batches: int | None = None,
               examples_per_row: int = 1):
    """Per-replica batches of ``pipeline`` for one input pipeline of ``tf.distribute``.

    Batch ``k`` of pipeline ``w`` holds the global indices of
    :func:`~t5pre.data.index_sampler.pipeline_indices`; the start costs nothing to reach. With
    ``pack``, a batch of ``B`` rows packs the ``B * examples_per_row`` examples of its index
    window (:func:`packing_factor`); a step consumes ``global_batch_size * examples_per_row``.
    """
    import tensorflow as tf

    if input_context is None:
        input_context = tf.distribute.InputContext()
    per_replica = input_context.get_per_replica_batch_size(global_batch_size)
    pipelines = input_context.num_input_pipelines
    pipeline_id = input_context.input_pipeline_id
    try:
        pipeline_indices(0, start=0, global_batch_size=global_batch_size, pipeline=0,
                         pipelines=pipelines, per_replica_batch_size=per_replica)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    factor = int(examples_per_row) if pack else 1

    def batch_features(indices, rows):
        if not pack:
            return pipeline.features(indices)
        inputs, targets = pipeline.examples(indices)
        return packed_features(inputs, targets, pipeline.sequence_length, rows)[0]

    example = batch_features(np.arange(1), 1)
    keys = list(example)
    dtypes = [tf.as_dtype(example[k].dtype) for k in keys]

    def make_batch(k):
        indices = pipeline_indices(int(k), start=int(start_examples),
                                   global_batch_size=global_batch_size * factor,
                                   pipeline=pipeline_id, pipelines=pipelines,
                                   per_replica_batch_size=per_replica * factor)
        features = batch_features(indices, per_replica)
        return [features[key] for key in keys]

    def to_dict(k):
        values = tf.numpy_function(make_batch, [k], dtypes, stateful=False)
        return {key: tf.ensure_shape(v, [per_replica, example[key].shape[1]])
                for key, v in zip(keys, values)}

    count = take_batches if take_batches is not None else np.iinfo(np.int64).max
    return (tf.data.Dataset.range(count)
            .map(to_dict, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .prefetch(tf.data.AUTOTUNE))


__all__ = ["RandomAccessTask", "RandomAccessMixture", "apportion", "model_features", "tf_dataset",
           "packed_features", "packing_factor",
           "random_access_pipeline", "examples_dataset"]
