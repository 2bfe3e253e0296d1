"""Throughput of the span-corruption input pipeline on ONE CPU core, stage by stage.

Stages (each includes the ones before it):

1. ``read+tokenize``   source -> SentencePiece ids (tensorflow-text, batched)
2. ``+chunk``          documents concatenated and cut into chunks of the raw length that
                       fills ``--inputs-length`` (568 for 512/114)
3. ``+span corrupt``   T5 span corruption + EOS through the objective's preprocessor (the one
                       numpy implementation inside ``tf.numpy_function``; training and
                       ``Task.get_dataset`` read a pretraining task by index instead, rows below)
4. ``+features``       ``EncDecFeatureConverter()``: fixed-length model features, and the same
                       with ``pack=True`` (packing has little to pack here: chunks are cut
                       to fill the inputs, so this row shows the cost of the packing step)

``tokens/s`` counts corpus tokens consumed per wall-clock second (sentinels, EOS and padding
excluded), so the rows compare directly; ``examples/s`` counts what the stage emits (documents,
chunks, examples, packed feature rows). ``tokens/cpu-s`` divides by the CPU time the process
used instead: on a busy shared machine it is the better estimate of one dedicated core's
throughput (``cpu/wall`` shows how much of a core the run actually got; ~1.0 when idle).

TensorFlow is held to one core: intra-op and inter-op pools of 1 thread and a private tf.data
threadpool of 1 thread (``AUTOTUNE`` parallel maps then run on that single thread).

Usage::

    python benchmarks/span_corruption_pipeline.py                 # the embedded default corpus
    python benchmarks/span_corruption_pipeline.py \\
        --files /work/shared/data/pretrain/enwiki_gensim_sample.jsonl \\
        --files '/work/shared/data/pretrain/jane_austen/*.txt'

Each ``--files`` (a glob; ``.jsonl`` files are read as JSON Lines with ``--text-key``) is one
corpus row group. ``--no-default`` skips the default corpus.

Two more rows per corpus compare chunking + span corruption on the *same pre-tokenized
documents* (tokenized once, as a cache holds them), one core each:

* ``random-access (numpy)``: t5pre's cached path (:mod:`t5pre.data.random_access`), global
  indices -> chunks -> numpy span corruption, and ``+features`` (model features in numpy);
* ``T5/seqio reference``: ``t5.data.preprocessors.span_corruption`` over the same token ids in
  tf.data. It needs ``seqio`` (0.0.20) and ``t5`` installed apart from the project venv, e.g.
  ``pip install --no-deps --target /tmp/seqio_ref seqio==0.0.20 t5`` plus their import-time
  dependencies (README lists them), then ``PYTHONPATH=/tmp/seqio_ref``; without them the row
  says it was skipped.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _one_core(tf):
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    options = tf.data.Options()
    options.threading.private_threadpool_size = 1
    options.threading.max_intra_op_parallelism = 1
    return options


def _count(dataset, fn, options, seconds, batch=32, warm_up=3.0):
    """Iterate ``dataset`` for at most ``seconds``; ``fn(block) -> (examples, tokens)``.

    Elements are grouped (``ragged_batch``) before counting so that the counting itself is a
    few vectorised ops per block, not a per-example cost charged to the pipeline.
    """
    counted = dataset.ragged_batch(batch).map(fn).with_options(options)
    iterator = iter(counted)
    warm_up_end = time.perf_counter() + warm_up
    for _ in iterator:  # traces functions, fills buffers, gets past the first (lumpy) blocks
        if time.perf_counter() > warm_up_end:
            break
    elements = tokens = 0
    start, start_cpu = time.perf_counter(), time.process_time()
    for n, t in iterator:
        elements += int(n)
        tokens += int(t)
        if time.perf_counter() - start > seconds:
            break
    return elements, tokens, time.perf_counter() - start, time.process_time() - start_cpu


def _flat(x):
    import tensorflow as tf

    return x.flat_values if isinstance(x, tf.RaggedTensor) else tf.reshape(x, [-1])


def _rows(x):
    import tensorflow as tf

    if isinstance(x, tf.RaggedTensor):
        return x.nrows(out_type=tf.int32)
    return tf.shape(x)[0]


def benchmark(task, lengths, options, seconds, split="train"):
    """Rows ``(stage, examples, tokens, wall seconds, CPU seconds)`` for one task."""
    import tensorflow as tf

    from t5pre.data.feature_converter import EncDecFeatureConverter
    from t5pre.data.registry import PreprocessContext, derive_seed

    vocab = task.vocabulary
    first_sentinel = vocab.vocab_size - vocab.extra_ids
    source = task.source.get_dataset(split=split, shuffle=False, seed=0).repeat()

    def ctx(position):
        return PreprocessContext(sequence_length=dict(lengths),
                                 output_features=task.output_features, split=split,
                                 seed=derive_seed(0, "preprocessor", position, 0), shuffle=False,
                                 task_name=task.name)

    stages = []
    dataset = source
    names = ["read+tokenize", "+chunk", "+span corrupt"]
    for position, (name, preprocessor) in enumerate(zip(names, task.preprocessors)):
        dataset = preprocessor(dataset, ctx(position))
        stages.append((name, dataset))

    def count_real(ids, real=None):
        ids = _flat(ids)
        keep = tf.logical_and(ids < first_sentinel, ids != vocab.eos_id)
        if real is not None:
            keep = tf.logical_and(keep, _flat(real) > 0)
        return tf.reduce_sum(tf.cast(keep, tf.int64))

    def plain_tokens(block):
        return _rows(block["targets"]), tf.size(_flat(block["targets"]), out_type=tf.int64)

    def corpus_tokens(block):
        return (_rows(block["targets"]),
                count_real(block["inputs"]) + count_real(block["targets"]))

    def feature_tokens(block):
        return (_rows(block["decoder_target_ids"]),
                count_real(block["encoder_token_ids"], block["encoder_padding_mask"])
                + count_real(block["decoder_target_ids"], block["decoder_loss_weights"]))

    examples = stages[-1][1]
    stages.append(("+features", EncDecFeatureConverter(pack=False)(examples, lengths)))
    stages.append(("+features (packed)", EncDecFeatureConverter(pack=True)(examples, lengths)))
    counters = [plain_tokens, plain_tokens, corpus_tokens, feature_tokens, feature_tokens]
    return [(name,) + _count(dataset, fn, options, seconds)
            for (name, dataset), fn in zip(stages, counters)]


def _time_loop(fn, seconds, warm_up=1.0):
    """Call ``fn() -> (examples, tokens)`` for ``seconds``; (examples, tokens, wall, cpu)."""
    end = time.perf_counter() + warm_up
    while time.perf_counter() < end:
        fn()
    examples = tokens = 0
    start, start_cpu = time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        n, t = fn()
        examples, tokens = examples + n, tokens + t
    return examples, tokens, time.perf_counter() - start, time.process_time() - start_cpu


def random_access_rows(task, lengths, seconds, batch=256, split="train"):
    """The cached path on one core over the task's documents, tokenized once in memory."""
    import numpy as np

    from t5pre.data.cache import in_memory_store
    from t5pre.data.random_access import RandomAccessTask

    store = in_memory_store(task, split)
    pipeline = RandomAccessTask(task, store, lengths, split, seed=0)
    state = {"next": 0}

    def indices():
        start = state["next"]
        state["next"] += batch
        return np.arange(start, start + batch)

    def corrupt():
        inputs, _ = pipeline.examples(indices())
        return len(inputs), len(inputs) * pipeline.chunk_length

    def features():
        out = pipeline.features(indices(), pack=True)
        return len(out["encoder_token_ids"]), batch * pipeline.chunk_length

    return store, [("random-access (numpy)",) + _time_loop(corrupt, seconds),
                   ("  +features",) + _time_loop(features, seconds)]


def seqio_reference_row(store, lengths, options, seconds, vocab_size):
    """T5's span_corruption preprocessor over the same token ids; None when not installed."""
    try:
        import seqio
        from t5.data import preprocessors as t5_preprocessors
    except ImportError as e:
        return None, f"skipped: seqio/t5 not importable ({e}); see the module docstring"
    import numpy as np
    import tensorflow as tf

    docs = [np.asarray(store.document(i), np.int32) for i in range(store.num_documents)]
    vocabulary = seqio.PassThroughVocabulary(size=vocab_size, eos_id=1)
    features = {"inputs": seqio.Feature(vocabulary, add_eos=True),
                "targets": seqio.Feature(vocabulary, add_eos=True)}
    ragged = tf.ragged.constant(docs, dtype=tf.int32)
    source = tf.data.Dataset.from_tensor_slices({"targets": ragged}).repeat()
    with seqio.utils.map_seed_manager(0):
        dataset = t5_preprocessors.span_corruption(source, sequence_length=dict(lengths),
                                                   output_features=features)
    vocab_first_sentinel = vocab_size - 100

    def tokens(block):
        real = lambda x: tf.reduce_sum(tf.cast(tf.logical_and(_flat(x) < vocab_first_sentinel,
                                                             _flat(x) != 1), tf.int64))
        return _rows(block["targets"]), real(block["inputs"]) + real(block["targets"])

    return ("T5/seqio reference",) + _count(dataset, tokens, options, seconds), None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", action="append", default=[],
                        help="a glob of text (.txt, one document a line) or .jsonl files; repeatable")
    parser.add_argument("--text-key", default="text", help="JSON field with the text")
    parser.add_argument("--no-default", action="store_true", help="skip the default corpus")
    parser.add_argument("--inputs-length", type=int, default=512)
    parser.add_argument("--targets-length", type=int, default=114)
    parser.add_argument("--seconds", type=float, default=15.0,
                        help="measured time per stage (after a 3 s warm-up)")
    args = parser.parse_args(argv)

    import tensorflow as tf

    options = _one_core(tf)
    import t5pre
    from t5pre.tasks import pretraining

    lengths = {"inputs": args.inputs_length, "targets": args.targets_length}
    tasks = []
    if not args.no_default:
        tasks.append(("default corpus", t5pre.get_task("default_span_corruption")))
    for i, pattern in enumerate(args.files):
        task = pretraining.register_text_pretraining_task(
            f"benchmark_files_{i}", {"train": [pattern]}, text_key=args.text_key)
        tasks.append((os.path.basename(pattern.rstrip("/")), task))

    objective = tasks[0][1].preprocessors[-1] if tasks else None
    raw = objective.raw_tokens_length(_context(lengths, tasks[0][1])) if objective else None
    print(f"span corruption pipeline on 1 core: lengths {lengths}, raw chunk {raw} tokens, "
          f"TF {tf.__version__}, {args.seconds:g} s per stage")
    header = (f"{'corpus':<26} {'stage':<19} {'examples/s':>10} {'tokens/s':>10} "
              f"{'tokens/cpu-s':>12} {'cpu/wall':>8} {'examples':>8}")
    print(header)
    print("-" * len(header))
    for label, task in tasks:
        rows = benchmark(task, lengths, options, args.seconds)
        store, numpy_rows = random_access_rows(task, lengths, args.seconds)
        rows += numpy_rows
        reference, skipped = seqio_reference_row(store, lengths, options, args.seconds,
                                                 task.vocabulary.vocab_size)
        rows += [reference] if reference else []
        for stage, n, tokens, wall, cpu in rows:
            print(f"{label[:26]:<26} {stage:<19} {n / wall:>10,.0f} {tokens / wall:>10,.0f} "
                  f"{tokens / max(cpu, 1e-9):>12,.0f} {cpu / wall:>8.2f} {n:>8,}")
            sys.stdout.flush()
        if skipped:
            print(f"{label[:26]:<26} T5/seqio reference  {skipped}")
        elif reference:
            print(f"{label[:26]:<26} random-access / reference (tokens/cpu-s): "
                  f"{(numpy_rows[0][2] / numpy_rows[0][4]) / (reference[2] / reference[4]):.2f}x")
    return 0


def _context(lengths, task):
    from t5pre.data.registry import PreprocessContext

    return PreprocessContext(sequence_length=dict(lengths), output_features=task.output_features,
                             split="train", seed=0, shuffle=False)


if __name__ == "__main__":
    sys.exit(main())
