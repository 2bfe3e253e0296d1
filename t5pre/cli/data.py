"""``t5pre data``: a task's preprocessed, random-access token cache.

``t5pre data cache TASK --out DIR`` tokenizes the task's splits once (in parallel over
``--workers`` processes, by files when the source has enough of them) into shards of token ids
plus a manifest (``t5pre/data/cache.py`` documents the layout). Training reads it when the run
config sets ``data.cache_dir: DIR``: any resume position is then reached in constant time.
``t5pre data verify DIR`` re-hashes every shard against the manifest.

Examples:
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
    cache.add_argument("--out", required=True, help="cache directory to write")
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
    check_output_path(args.out, flag="--out", directory=True)  # before any tokenizing
    task = t5pre.get_task(args.task)
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


def run_verify(args):
    from t5pre.data.cache import open_cache

    cache = open_cache(args.dir)
    cache.verify()
    splits = cache.manifest["splits"]
    print(f"{args.dir}: task {cache.task_name!r}, "
          + ", ".join(f"{s} {e['documents']:,} documents" for s, e in splits.items()) + ": ok")
