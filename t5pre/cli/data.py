"""``t5pre data``: a task's preprocessed, random-access token cache.

Training always reads a token cache: without ``data.cache_dir`` it builds the task's implicit
cache on first use, under ``$T5PRE_CACHE_DIR/token-caches`` (default ``~/.cache/t5pre``), and
reuses it while the sources, vocabulary and preprocessors are unchanged. ``t5pre data cache TASK``
builds that implicit cache ahead of time, in parallel over ``--workers`` processes (by files when
the source has enough of them); with ``--out DIR`` it writes a cache of its own, which a run uses
when its config sets ``data.cache_dir: DIR`` (``t5pre/data/cache.py`` documents the layout).
``t5pre data verify DIR`` re-hashes every shard against the manifest.

Examples:
  t5pre data cache default_span_corruption --workers 2     # what the next run will read
  t5pre data cache default_span_corruption --out caches/default --workers 2
  t5pre data cache my_corpus --module mytasks --out caches/mine --split train
  t5pre data verify caches/default
"""

from __future__ import annotations

from t5pre.cli import doc_description
from t5pre.cli.common import add_module_argument, import_modules


def register(subparsers):
    parser = subparsers.add_parser("data", help="build and check preprocessed token caches",
                                   **doc_description(__doc__))
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    cache = sub.add_parser("cache", help="tokenize a task once into a random-access cache")
    cache.add_argument("task", help="registered task name")
    cache.add_argument("--out", default=None,
                       help="cache directory to write (default: the task's implicit cache, which "
                            "training without data.cache_dir reads)")
    cache.add_argument("--split", action="append", default=[],
                       help="split to cache (repeatable; default: every split of the task)")
    cache.add_argument("--workers", type=int, default=1, help="processes (default: 1)")
    cache.add_argument("--inputs-length", type=int, default=None,
                       help="for tasks that are not pretraining tasks: the lengths their "
                            "preprocessors trim to (recorded in the manifest)")
    cache.add_argument("--targets-length", type=int, default=None)
    cache.add_argument("--overwrite", action="store_true", help="replace an existing cache")
    add_module_argument(cache)
    cache.set_defaults(func=run_cache)
    verify = sub.add_parser("verify", help="check every shard of a cache against its manifest")
    verify.add_argument("dir", help="cache directory")
    verify.set_defaults(func=run_verify)


def run_cache(args):
    import functools

    import t5pre
    from t5pre.data.cache import build_cache
    from t5pre.errors import ConfigError
    from t5pre.files import check_output_path

    import_modules(args.module)
    if args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    lengths = None
    if args.inputs_length or args.targets_length:
        if not (args.inputs_length and args.targets_length):
            raise ConfigError("give both --inputs-length and --targets-length")
        lengths = {"inputs": args.inputs_length, "targets": args.targets_length}
    if args.out is not None:
        check_output_path(args.out, flag="--out", directory=True)  # before any tokenizing
    task = t5pre.get_task(args.task)
    if args.out is None:
        return _build_implicit(task, args, lengths)
    manifest = build_cache(task, args.out, splits=args.split or None, workers=args.workers,
                           sequence_length=lengths, overwrite=args.overwrite, modules=args.module,
                           progress=functools.partial(print, flush=True))
    for split, entry in manifest["splits"].items():
        tokens = ", ".join(f"{k} {v:,}" for k, v in entry["tokens"].items())
        print(f"{split}: {entry['documents']:,} documents, {tokens} tokens, "
              f"{len(entry['shards'])} shard(s)")
    build = manifest["build"]
    print(f"wrote {args.out} in {build['seconds']:.1f} s ({build['tokens_per_second']:,.0f} "
          f"tokens/s with {build['workers']} worker(s))")


def _build_implicit(task, args, lengths):
    from t5pre.data.cache import pretraining_parts
    from t5pre.data.implicit_cache import ensure_cache
    from t5pre.errors import ConfigError

    if pretraining_parts(task)[0] is not None:
        lengths = None  # a pretraining cache holds documents: the lengths do not matter
    elif lengths is None:
        raise ConfigError(f"task {task.name!r} is not a pretraining task: its cache holds examples "
                          "trimmed to the run's lengths; give --inputs-length/--targets-length")
    if args.overwrite:
        raise ConfigError("--overwrite needs --out (an implicit cache is rebuilt when its inputs "
                          "change, never overwritten)")
    for split in args.split or task.splits:
        cache = ensure_cache(task, split, lengths, workers=args.workers, modules=args.module)
        if cache is None:
            raise ConfigError(f"task {task.name!r}: its source ({task.source.describe()}) has no "
                              "fingerprint, so training tokenizes it in memory at each start; "
                              "write a cache with --out and set data.cache_dir")
        entry = cache.manifest["splits"][split]
        tokens = ", ".join(f"{k} {v:,}" for k, v in entry["tokens"].items())
        print(f"{split}: {entry['documents']:,} documents, {tokens} tokens in {cache.path}")


def run_verify(args):
    from t5pre.data.cache import open_cache

    cache = open_cache(args.dir)
    cache.verify()
    splits = cache.manifest["splits"]
    print(f"{args.dir}: task {cache.task_name!r}, "
          + ", ".join(f"{s} {e['documents']:,} documents" for s, e in splits.items()) + ": ok")
