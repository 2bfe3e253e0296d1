"""``t5pre tasks``: list the registered tasks and mixtures, and show a task's examples.

``t5pre tasks show`` prints a few examples of the task's ``get_dataset`` decoded with the task's
vocabulary, sentinels visible (``<extra_id_0>`` ...), with token counts: the quickest way to check
what a denoising objective really feeds the model. For a pretraining task or a mixture of them
these are the examples training reads first: ``--seed S`` shows a run with ``data.seed: S``
(default ``training.seed``, 0) at these lengths (its token cache is built once if needed).
"""

from __future__ import annotations

import textwrap

from t5pre.cli.common import add_module_argument, import_modules


def register(subparsers):
    parser = subparsers.add_parser("tasks", help="list registered tasks and mixtures, show examples")
    sub = parser.add_subparsers(dest="tasks_command", metavar="ACTION", required=True)

    listing = sub.add_parser("list", help="list tasks (source, splits, features) and mixtures")
    listing.add_argument("--verbose", "-v", action="store_true", help="also list each task's preprocessors")
    add_module_argument(listing)
    listing.set_defaults(func=run_list)

    show = sub.add_parser("show", help="print a few preprocessed examples of a task or mixture")
    show.add_argument("name", help="task or mixture name")
    show.add_argument("--split", default="train", help="split to read (default: train)")
    show.add_argument("-n", "--num-examples", type=int, default=3, help="examples to print (default: 3)")
    show.add_argument("--inputs-length", type=int, default=512,
                      help="encoder length in tokens, EOS included (default: 512, as T5)")
    show.add_argument("--targets-length", type=int, default=114,
                      help="decoder length in tokens, EOS included (default: 114, T5's span "
                           "corruption targets for 512 inputs)")
    show.add_argument("--seed", type=int, default=0, help="shuffle and noise seed (default: 0)")
    show.add_argument("--no-shuffle", action="store_true", help="read the split in order")
    show.add_argument("--ids", action="store_true", help="also print the token ids")
    show.add_argument("--width", type=int, default=100, help="wrap text at this width (0: no wrapping)")
    add_module_argument(show)
    show.set_defaults(func=run_show)


def _feature_summary(features) -> str:
    parts = []
    for key, feature in features.items():
        vocab = feature.vocabulary
        size = getattr(vocab, "vocab_size", "?")
        flags = [] if feature.add_eos else ["no eos"]
        if not feature.required:
            flags.append("optional")
        parts.append(f"{key} (vocab {size}{', ' + ', '.join(flags) if flags else ''})")
    return " ".join(parts)


def _step_name(step) -> str:
    """A readable name for a preprocessor (function, partial or callable object)."""
    name = getattr(step, "__name__", None)
    if name:
        return name
    if type(step).__repr__ is not object.__repr__:
        return repr(step)
    return type(step).__name__


def run_list(args):
    from t5pre.data.registry import MixtureRegistry, TaskRegistry

    import_modules(args.module)
    tasks = TaskRegistry.names()
    mixtures = MixtureRegistry.names()
    print(f"{len(tasks)} tasks")
    for name in tasks:
        task = TaskRegistry.get(name)
        print(f"  {name}")
        print(f"      source:   {task.source.describe()}")
        print(f"      splits:   {', '.join(task.splits)}")
        print(f"      features: {_feature_summary(task.output_features)}")
        if task.description:
            print(f"      about:    {task.description}")
        if args.verbose:
            steps = [_step_name(p) for p in task.preprocessors]
            print(f"      steps:    {' -> '.join(steps) or '(none)'}")
            metrics = [_step_name(m) for m in task.metric_fns]
            if metrics:
                print(f"      metrics:  {', '.join(metrics)}")
    print(f"{len(mixtures)} mixtures")
    for name in mixtures:
        mixture = MixtureRegistry.get(name)
        try:
            rates = ", ".join(f"{t} {r:.3f}" for t, r in mixture.rates().items())
        except Exception as e:  # noqa: BLE001 - a broken mixture should not hide the others
            rates = f"(cannot resolve: {e})"
        print(f"  {name}: {rates}")
    return 0


def _wrap(text, width, indent="      "):
    if width <= 0:
        return indent + text.replace("\n", "\n" + indent)
    lines = []
    for paragraph in text.split("\n"):
        lines.extend(textwrap.wrap(paragraph, width=width, initial_indent=indent, subsequent_indent=indent) or [indent])
    return "\n".join(lines)


def run_show(args):
    from t5pre.data.registry import get_task_or_mixture
    from t5pre.data.sources import data_errors
    from t5pre.errors import ConfigError

    if args.num_examples < 1:
        raise ConfigError("-n must be >= 1")
    import_modules(args.module)
    provider = get_task_or_mixture(args.name)
    features = provider.output_features
    lengths = {"inputs": args.inputs_length, "targets": args.targets_length}
    print(
        f"{args.name} [{args.split}] inputs_length={args.inputs_length} "
        f"targets_length={args.targets_length} seed={args.seed}"
    )
    # One pass of a task; a mixture is read as training reads it (forever, by its rates).
    num_epochs = None if getattr(provider, "kind", "task") == "mixture" else 1
    dataset = provider.get_dataset(
        sequence_length=lengths, split=args.split, shuffle=not args.no_shuffle, seed=args.seed,
        num_epochs=num_epochs)
    shown = 0
    with data_errors():
        for example in dataset.take(args.num_examples).as_numpy_iterator():
            shown += 1
            print(f"\n--- example {shown}")
            for key, feature in features.items():
                if key not in example:
                    continue
                ids = [int(i) for i in example[key]]
                vocab = feature.vocabulary
                sentinels = sum(1 for i in ids if vocab.is_sentinel(i)) if hasattr(vocab, "is_sentinel") else 0
                ends = "ends with EOS" if ids and ids[-1] == vocab.eos_id else "no EOS"
                limit = lengths.get(key)
                info = f"{len(ids)} tokens" + (f" / {limit}" if limit else "") + f", {sentinels} sentinels, {ends}"
                print(f"  {key} ({info}):")
                print(_wrap(vocab.decode(ids), args.width))
                if args.ids:
                    print(_wrap(" ".join(str(i) for i in ids), args.width))
            for key in features:
                raw = example.get(f"{key}_pretokenized")
                if raw is not None and getattr(raw, "ndim", 0) == 0:
                    text = raw.decode("utf-8", errors="replace")
                    shortened = text if len(text) <= 400 else text[:400] + " ..."
                    print(f"  {key}_pretokenized ({len(text)} chars):")
                    print(_wrap(shortened, args.width))
    if shown == 0:
        print(f"(split {args.split!r} of {args.name!r} gave no examples)")
    return 0
