"""Cached autoregressive decoding for `T5Model`: greedy, top-k/top-p sampling and beam search.

The encoder runs once; each decoder layer's cross-attention keys/values are computed once; the
self-attention key/value cache is preallocated at `max_length` and written one position per step
(`T5Model.decode_step`). Every shape is static and the loop is `keras.ops.while_loop`, so the
same code traces inside `tf.function` (and a SavedModel export) on TensorFlow and jits on JAX.
`compile_decoder` (what predict, evaluate and fine-tuning's evaluation run) compiles the whole
decode, loop included, into one XLA program on either backend (`DecodeSettings.xla`): with tiny
ops per step, a graph executor's per-op cost dominated a TensorFlow-graph decode (its CPU time
equalled its wall time on 2 cores); benchmarks/decode.py prints where the time goes.

Output convention (all methods): int32 tokens `[B, max_length]` holding the generated ids after
the start token (pad id 0), EOS included, pad after EOS; a row that never emits EOS runs to
`max_length`. Scores are the summed log-probabilities (beam search: length-normalised).

Beam search follows T5/t5x: 2*K candidates per step so that K beams stay alive after some end
in EOS; finished hypotheses are ranked by `log_prob / ((5 + length) / 6) ** alpha`; the search
stops when no alive beam can beat the K-th finished one.
"""

from __future__ import annotations

import keras
from keras import ops
from keras.tree import map_structure as tree_map

from t5pre.errors import ConfigError

PAD_ID = 0
EOS_ID = 1
NEG_INF = -1e9
METHODS = ("greedy", "sample", "beam")


def _length_penalty(length, alpha):
    return ops.power((5.0 + ops.cast(length, "float32")) / 6.0, alpha)


def _stateless_uniform(shape, seed, step):
    """Uniform (0, 1) noise that depends only on (seed, step): reproducible, no loop state."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        seeds = tf.stack([tf.cast(seed, tf.int32), tf.cast(step, tf.int32)])
        # Under XLA this draws other numbers than TensorFlow's kernel for the same seed (even
        # with the algorithm named): an XLA-compiled decoder samples reproducibly, but not the
        # tokens of the plain graph.
        return tf.random.stateless_uniform(shape, seed=seeds, minval=1e-12, maxval=1.0)
    if backend == "jax":
        import jax

        key = jax.random.fold_in(jax.random.PRNGKey(seed), step)
        return jax.random.uniform(key, shape, minval=1e-12, maxval=1.0)
    raise NotImplementedError(f"sampling is implemented for the tensorflow and jax backends, not {backend}")


def filter_logits(logits, top_k=0, top_p=1.0, temperature=1.0):
    """Temperature, then keep the `top_k` largest and/or the smallest set with mass >= `top_p`."""
    logits = ops.cast(logits, "float32") / temperature
    if top_k and top_k > 0:
        kth = ops.top_k(logits, top_k)[0][:, -1:]
        logits = ops.where(logits < kth, NEG_INF, logits)
    if top_p < 1.0:
        sorted_logits = ops.flip(ops.sort(logits, axis=-1), axis=-1)  # descending
        probs = ops.softmax(sorted_logits, axis=-1)
        mass_before = ops.cumsum(probs, axis=-1) - probs
        keep = mass_before < top_p  # the first token is always kept
        threshold = ops.min(ops.where(keep, sorted_logits, -NEG_INF), axis=-1, keepdims=True)
        logits = ops.where(logits < threshold, NEG_INF, logits)
    return logits


def _write(tokens, index, values):
    """tokens[:, index] = values (a select: static shapes, same on every backend)."""
    at = ops.arange(ops.shape(tokens)[-1]) == index
    return ops.where(at, ops.expand_dims(values, -1), tokens)


def _empty_rows(encoder_padding_mask):
    """Rows without a single input token (bool [B]): padding rows added to fill a batch
    bucket. They decode to nothing (all pad, score 0) and never keep the loop running."""
    return ops.logical_not(ops.any(ops.cast(encoder_padding_mask, "bool"), axis=-1))


def _greedy_or_sample(model, encoder_token_ids, encoder_padding_mask, max_length, sample, top_k,
                      top_p, temperature, seed, eos_id):
    batch = ops.shape(encoder_token_ids)[0]
    encoder_outputs = model.encode(encoder_token_ids, encoder_padding_mask)
    cross_kv = model.cross_key_values(encoder_outputs)
    cache = model.init_cache(batch, max_length)
    tokens = ops.zeros((batch, max_length), dtype="int32")
    previous = ops.full((batch,), PAD_ID, dtype="int32")
    finished = _empty_rows(encoder_padding_mask)
    scores = ops.zeros((batch,), dtype="float32")

    def cond(i, previous, tokens, cache, finished, scores):
        return ops.logical_and(i < max_length, ops.logical_not(ops.all(finished)))

    def body(i, previous, tokens, cache, finished, scores):
        logits, cache = model.decode_step(previous, i, cache, cross_kv, encoder_padding_mask)
        if sample:
            log_probs = ops.log_softmax(logits, axis=-1)
            filtered = filter_logits(logits, top_k, top_p, temperature)
            gumbel = -ops.log(-ops.log(_stateless_uniform(ops.shape(filtered), seed, i)))
            next_ids = ops.argmax(filtered + gumbel, axis=-1)
            next_ids = ops.where(finished, PAD_ID, ops.cast(next_ids, "int32"))
            picked = ops.take_along_axis(log_probs, next_ids[:, None], axis=-1)[:, 0]
        else:
            # argmax as the first index holding the maximum (argmax's tie rule), and its
            # log-probability as -log(sum(exp(logits - max))) (log_softmax at the maximum):
            # plain reductions instead of XLA's (value, index) reduction, 2% of a batch-32
            # greedy decode on CPU, and a full log-softmax (1-6% faster, 2 runs, 1 thread).
            best = ops.max(logits, axis=-1, keepdims=True)
            vocab = ops.shape(logits)[-1]
            first = ops.min(ops.where(logits == best, ops.arange(vocab, dtype="int32")[None, :],
                                      vocab), axis=-1)
            next_ids = ops.where(finished, PAD_ID, first)
            picked = -ops.log(ops.sum(ops.exp(logits - best), axis=-1))
        scores = scores + ops.where(finished, 0.0, picked)
        tokens = _write(tokens, i, next_ids)
        finished = ops.logical_or(finished, next_ids == eos_id)
        return i + 1, next_ids, tokens, cache, finished, scores

    state = ops.while_loop(cond, body, (ops.convert_to_tensor(0, "int32"), previous, tokens, cache,
                                        finished, scores))
    return state[2], state[5]


def _beam_search(model, encoder_token_ids, encoder_padding_mask, max_length, beam_size, alpha,
                 eos_id):
    k = beam_size
    batch = ops.shape(encoder_token_ids)[0]
    encoder_outputs = model.encode(encoder_token_ids, encoder_padding_mask)
    # Cross keys/values once per example: the decoder step attends from all K beams of an
    # example at once (beams of an example are adjacent rows of the self-attention cache).
    cross_kv = model.cross_key_values(encoder_outputs)
    cache = model.init_cache(batch * k, max_length)
    first_beam_only = ops.concatenate(
        [ops.zeros((1,), "float32"), ops.full((k - 1,), NEG_INF, "float32")]
    )
    alive_seq = ops.zeros((batch, k, max_length), dtype="int32")
    alive_logp = ops.tile(first_beam_only[None, :], (batch, 1))
    finished_seq = ops.zeros((batch, k, max_length), dtype="int32")
    # An empty row starts with K finished (empty) hypotheses of score 0: no alive beam can
    # beat them, so it is decided from the start and decodes to nothing.
    finished_score = ops.where(_empty_rows(encoder_padding_mask)[:, None], 0.0,
                               ops.full((batch, k), NEG_INF, dtype="float32"))
    previous = ops.full((batch * k,), PAD_ID, dtype="int32")
    best_possible_factor = _length_penalty(max_length, alpha)

    def gather_beams(x, indices):  # x [B, N, ...], indices [B, M] -> [B, M, ...]
        expanded = ops.reshape(indices, ops.shape(indices) + (1,) * (len(x.shape) - 2))
        return ops.take_along_axis(x, expanded, axis=1)

    def cond(i, previous, alive_seq, alive_logp, finished_seq, finished_score, cache):
        best_alive = alive_logp[:, 0] / best_possible_factor
        worst_finished = finished_score[:, -1]
        undecided = ops.any(best_alive > worst_finished)
        return ops.logical_and(i < max_length, undecided)

    def body(i, previous, alive_seq, alive_logp, finished_seq, finished_score, cache):
        logits, cache = model.decode_step(previous, i, cache, cross_kv, encoder_padding_mask,
                                          beams=k)
        vocab = ops.shape(logits)[-1]
        log_probs = ops.reshape(ops.log_softmax(logits, axis=-1), (batch, k, vocab))
        candidates = ops.reshape(log_probs + alive_logp[:, :, None], (batch, k * vocab))
        top_logp, top_index = ops.top_k(candidates, 2 * k)  # [B, 2K]
        source_beam = top_index // vocab
        token = ops.cast(top_index % vocab, "int32")
        sequences = _write(gather_beams(alive_seq, source_beam), i, token)  # [B, 2K, T]
        ends = token == eos_id

        # Alive: the best K candidates that did not just end.
        alive_logp, keep = ops.top_k(ops.where(ends, NEG_INF, top_logp), k)
        alive_seq = gather_beams(sequences, keep)
        kept_source = gather_beams(source_beam, keep)
        previous = ops.reshape(gather_beams(token, keep), (batch * k,))
        flat_source = ops.reshape(ops.arange(batch)[:, None] * k + kept_source, (-1,))
        cache = tree_map(lambda c: ops.take(c, flat_source, axis=0), cache)

        # Finished: merge the candidates that just ended into the K best so far.
        ended_score = ops.where(ends, top_logp / _length_penalty(i + 1, alpha), NEG_INF)
        merged_score = ops.concatenate([finished_score, ended_score], axis=1)
        merged_seq = ops.concatenate([finished_seq, sequences], axis=1)
        finished_score, best = ops.top_k(merged_score, k)
        finished_seq = gather_beams(merged_seq, best)
        return i + 1, previous, alive_seq, alive_logp, finished_seq, finished_score, cache

    state = ops.while_loop(
        cond, body,
        (ops.convert_to_tensor(0, "int32"), previous, alive_seq, alive_logp, finished_seq,
         finished_score, cache),
    )
    _, _, alive_seq, alive_logp, finished_seq, finished_score, _ = state
    # Rows where nothing finished fall back to their best alive beam.
    any_finished = finished_score[:, 0] > NEG_INF / 2
    alive_score = alive_logp[:, 0] / best_possible_factor
    tokens = ops.where(any_finished[:, None], finished_seq[:, 0], alive_seq[:, 0])
    scores = ops.where(any_finished, finished_score[:, 0], alive_score)
    return tokens, scores


def decode(model, encoder_token_ids, encoder_padding_mask=None, max_length=64, method="greedy",
           beam_size=4, alpha=0.6, top_k=0, top_p=1.0, temperature=1.0, seed=0, eos_id=EOS_ID):
    """Decode a batch of encoder inputs -> (tokens int32 [B, max_length], scores float32 [B]).

    `method`: "greedy", "sample" (with `top_k`, `top_p`, `temperature`, `seed`) or "beam"
    (`beam_size`, length-penalty `alpha`). Traceable: wrap in `tf.function` (with or without
    `jit_compile`) / `jax.jit`; `compile_decoder` does. A row whose padding mask is all zero
    (no input at all: batch padding) gives all-pad tokens and score 0.
    """
    if method not in METHODS:
        raise ConfigError(f"decoding method must be one of {list(METHODS)}, got {method!r}")
    max_length = int(max_length)
    if max_length < 1:
        raise ConfigError(f"decoding max_length must be >= 1, got {max_length}")
    encoder_token_ids = ops.cast(ops.convert_to_tensor(encoder_token_ids), "int32")
    if encoder_padding_mask is None:
        encoder_padding_mask = ops.cast(encoder_token_ids != PAD_ID, "int32")
    encoder_padding_mask = ops.cast(ops.convert_to_tensor(encoder_padding_mask), "int32")
    if method == "beam":
        if int(beam_size) < 1:
            raise ConfigError(f"beam_size must be >= 1, got {beam_size}")
        return _beam_search(model, encoder_token_ids, encoder_padding_mask, max_length,
                            int(beam_size), float(alpha), eos_id)
    if method == "sample" and temperature <= 0:
        raise ConfigError(f"temperature must be > 0, got {temperature}")
    return _greedy_or_sample(model, encoder_token_ids, encoder_padding_mask, max_length,
                             method == "sample", top_k, top_p, temperature, seed, eos_id)


#: Compiled decoders pad a batch to `padded_batch_size(rows)` rows and
#: `padded_width(tokens)` encoder tokens, so that an XLA program, compiled once per shape,
#: is compiled for a few shapes only (batch: powers of two; width: powers of two and their
#: midpoints, 8 at least). Padding rows have an all-zero mask and padding tokens are masked,
#: so they change no result.
MIN_PADDED_WIDTH = 8


def padded_batch_size(rows: int) -> int:
    size = 1
    while size < rows:
        size *= 2
    return size


def padded_width(tokens: int) -> int:
    size = padded_batch_size(max(int(tokens), MIN_PADDED_WIDTH))
    return 3 * size // 4 if size >= 16 and 3 * size // 4 >= tokens else size


def padded_sizes(limit: int, padding) -> list:
    """Every size `padding` (`padded_batch_size` / `padded_width`) gives up to `limit` rows or
    tokens, ascending (for the in-graph padding of the serving SavedModel)."""
    sizes, n = [], 1
    while not sizes or sizes[-1] < limit:
        size = padding(n)
        if not sizes or size > sizes[-1]:
            sizes.append(size)
        n = size + 1
    return sizes


def compile_decoder(model, settings, eos_id=EOS_ID):
    """`decode` with `settings` (a `DecodeSettings`, lengths resolved) fixed, compiled for the
    backend. Returns `run(ids, mask) -> (tokens, scores)` (numpy in, numpy out). `eos_id` is the
    vocabulary's (-1: never stop, as benchmarks/decode.py runs it).

    TensorFlow, `settings.xla` (the default): the whole decode (encoder, loop, cache updates)
    is one XLA program, `tf.function(jit_compile=True)`; XLA compiles it once per input shape,
    so batches are padded to a few shapes (`padded_batch_size`, `padded_width`) and the
    padding rows are cut from the result. `xla=False`: a plain `tf.function` graph
    (`reduce_retracing` keeps batches of different widths to one trace, no padding).
    JAX: `jax.jit`, always XLA, padded likewise; the weights are arguments of the jitted
    function (`keras.StatelessScope`), so new weights (fine-tuning's periodic evaluation)
    reuse the compiled program.

    Kept on the model per setting, so repeated calls (every evaluation of a fine-tuning run,
    every batch of a file) reuse one trace and its compiled shapes.
    """
    kwargs = {**settings.decode_kwargs(), "eos_id": int(eos_id)}
    backend = keras.backend.backend()
    xla = bool(settings.xla) or backend == "jax"
    key = (tuple(sorted(kwargs.items())), xla)
    cache = model.__dict__.setdefault("_t5pre_decoders", {})
    if key not in cache:
        def run(ids, mask):
            return decode(model, ids, mask, **kwargs)

        if backend == "tensorflow":
            import tensorflow as tf

            compiled = tf.function(run, reduce_retracing=True, jit_compile=xla)
        elif backend == "jax":
            import jax

            variables = list(model.variables)

            def stateless(values, ids, mask):
                with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                    return run(ids, mask)

            jitted = jax.jit(stateless)

            def compiled(ids, mask):
                return jitted([v.value for v in variables], ids, mask)
        else:
            compiled = run
        # Sampling draws its noise by row position in the batch: it is not split into parts.
        cache[key] = _padded(compiled, split=not settings.sample) if xla else \
            _as_numpy(compiled)
    return cache[key]


def _as_numpy(fn):
    import numpy as np

    def run(ids, mask):
        tokens, scores = fn(ids, mask)
        return np.asarray(tokens), np.asarray(scores)

    return run


#: `compile_decoder` decodes a batch on CPU as up to this many parts at once, one thread each
#: (measured on 2 cores; more cores still give each part their intra-op threads).
MAX_PARTS = 2
_parts_pool = None


def decode_parts(rows: int) -> int:
    """Into how many parts `compile_decoder` splits a batch of `rows` rows: the CPU threads the
    backend computes with (TensorFlow's intra-op pool, all cores by default; on JAX the cores,
    or 1 when `XLA_FLAGS` has `--xla_cpu_multi_thread_eigen=false`), at most `MAX_PARTS`; 1 on
    an accelerator.

    Why: the compiled decode runs its steps one after another, and only the matrix products
    inside a step are spread over the threads; with two parts decoded at once the elementwise
    work, the top-k, the attention over the encoder keys of each part run side by side too
    (measured at 2 threads, 2 cores: 21-27% less wall time for batches 8 and 32, greedy and
    beam, on TensorFlow; 18-32% on JAX). Rows are independent, so the tokens do not change.
    """
    return max(1, min(int(rows), MAX_PARTS, _cpu_threads()))


def _cpu_threads() -> int:
    global _CPU_THREADS
    if _CPU_THREADS is None:
        import os

        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
            os.cpu_count() or 1)
        backend = keras.backend.backend()
        threads = 1
        if backend == "tensorflow":
            import tensorflow as tf

            if not (tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU")):
                threads = tf.config.threading.get_intra_op_parallelism_threads() or cores
        elif backend == "jax":
            import jax

            one_thread = "xla_cpu_multi_thread_eigen=false" in os.environ.get("XLA_FLAGS", "")
            threads = cores if jax.default_backend() == "cpu" and not one_thread else 1
        _CPU_THREADS = threads
    return _CPU_THREADS


_CPU_THREADS = None


def _padded(fn, split=True):
    """`fn` on inputs padded to `padded_batch_size` x `padded_width`, padding rows cut off;
    with `split`, a batch split into `decode_parts` parts decoded at once."""
    import numpy as np

    def one(ids, mask):
        rows, width = ids.shape
        shape = (padded_batch_size(rows), padded_width(width))
        if shape != ids.shape:
            ids = np.pad(ids, [(0, shape[0] - rows), (0, shape[1] - width)])
            mask = np.pad(mask, [(0, shape[0] - rows), (0, shape[1] - width)])
        tokens, scores = fn(ids, mask)
        return np.asarray(tokens)[:rows], np.asarray(scores)[:rows]

    def run(ids, mask):
        global _parts_pool
        ids, mask = np.asarray(ids, "int32"), np.asarray(mask, "int32")
        parts = decode_parts(ids.shape[0]) if split else 1
        if parts == 1:
            return one(ids, mask)
        if _parts_pool is None:
            from concurrent.futures import ThreadPoolExecutor

            _parts_pool = ThreadPoolExecutor(MAX_PARTS, thread_name_prefix="t5pre-decode")
        size = -(-ids.shape[0] // parts)
        futures = [_parts_pool.submit(one, ids[start:start + size], mask[start:start + size])
                   for start in range(0, ids.shape[0], size)]
        results = [f.result() for f in futures]
        return (np.concatenate([t for t, _ in results]),
                np.concatenate([s for _, s in results]))

    return run


def uncached_greedy(model, encoder_token_ids, encoder_padding_mask, max_length, eos_id=EOS_ID):
    """Reference greedy decoding that re-runs the whole decoder on the prefix at every step (no
    cache). Slow and eager; used to check the cached path."""
    import numpy as np

    ids = np.asarray(encoder_token_ids, dtype="int32")
    mask = np.asarray(encoder_padding_mask, dtype="int32")
    batch = ids.shape[0]
    tokens = np.zeros((batch, max_length), "int32")
    finished = np.zeros((batch,), bool)
    for i in range(max_length):
        decoder_in = np.concatenate([np.zeros((batch, 1), "int32"), tokens[:, :i]], axis=1)
        logits = np.asarray(model({
            "encoder_token_ids": ids, "encoder_padding_mask": mask,
            "decoder_token_ids": decoder_in, "decoder_padding_mask": np.ones_like(decoder_in),
        }))[:, -1]
        next_ids = np.where(finished, PAD_ID, logits.argmax(-1))
        tokens[:, i] = next_ids
        finished |= next_ids == eos_id
        if finished.all():
            break
    return tokens


def generate(model, vocabulary, texts, max_length=64, method="greedy", input_length=512,
             batch_size=32, beam_size=4, alpha=0.6, **sampling):
    """Strings in, strings out: tokenise (EOS appended, truncated to `input_length`), decode in
    batches of `batch_size`, detokenise (stops at EOS). `method` "beam" uses `beam_size` and
    `alpha`; "sample" takes `temperature`, `top_k`, `top_p`, `seed`. The same path as
    `t5pre predict` (`t5pre.evaluation.predict.Predictor`) with `DecodeSettings`."""
    from t5pre.models.decode_settings import DecodeSettings
    from t5pre.models.preprocessing import Seq2SeqPreprocessor

    if method not in METHODS:
        raise ConfigError(f"decoding method must be one of {list(METHODS)}, got {method!r}")
    if isinstance(texts, str):
        texts = [texts]
    settings = DecodeSettings(beam_size=int(beam_size) if method == "beam" else 1,
                              length_penalty=alpha, max_decode_length=int(max_length),
                              max_input_length=int(input_length), sample=method == "sample",
                              **sampling).validate()
    preprocessor = Seq2SeqPreprocessor(vocabulary, settings.max_input_length)
    run = compile_decoder(model, settings)
    outputs = []
    for start in range(0, len(texts), batch_size):
        tokens, _ = run(*preprocessor.encode_batch(texts[start : start + batch_size]))
        outputs.extend(preprocessor.decode(tokens))
    return outputs
