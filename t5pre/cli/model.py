"""`t5pre model info CONFIG_OR_NAME`: parameter counts and training FLOPs of a model config."""


def register(subparsers):
    parser = subparsers.add_parser(
        "model", help="inspect model configs", description="Inspect T5 model configs."
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    info = actions.add_parser(
        "info",
        help="parameter counts and training FLOPs per token",
        description="Print parameter counts (embedding, encoder, decoder, head, total) and "
        "training FLOPs for a size name (tiny, small, base, large, xl, t5_1_0_small), a model "
        "yaml, or a model directory. FLOPs = 3 x forward, forward = 2 x weight-matrix params x "
        "tokens (encoder on inputs, decoder and head on targets) + 4 x heads x d_kv x layers x "
        "attention-matrix sizes; per token = per (inputs + targets) token.",
    )
    info.add_argument("config", metavar="CONFIG_OR_NAME")
    info.add_argument("--inputs-length", type=int, default=512)
    info.add_argument("--targets-length", type=int, default=114)
    info.add_argument("--vocab-size", type=int, default=None,
                      help="vocabulary size for configs with vocab_size: null (default: the "
                      "shipped default vocabulary)")
    memory = info.add_argument_group(
        "memory per device (an estimate: float32 weights, gradients and optimizer state; "
        "activations by a per-layer formula, see t5pre/models/info.py)")
    memory.add_argument("--batch-size", type=int, default=128, help="GLOBAL batch")
    memory.add_argument("--optimizer", default="adafactor",
                        choices=["adafactor", "keras_adafactor", "adamw"])
    memory.add_argument("--devices", type=int, default=1)
    memory.add_argument("--strategy", default="data_parallel", choices=["data_parallel", "fsdp"],
                        help="fsdp: parameters, gradients and optimizer state split over devices")
    memory.add_argument("--precision", default="float32",
                        choices=["float32", "mixed_bfloat16", "mixed_float16"])
    info.set_defaults(func=_info)


def _resolve(config, vocab_size):
    from t5pre.errors import ConfigError

    if config.vocab_size is not None:
        return config if vocab_size is None else config.resolve_vocab_size(vocab_size)
    if vocab_size is None:
        try:
            from t5pre.data.vocabulary import default_vocabulary

            vocab_size = default_vocabulary().vocab_size
        except Exception:
            raise ConfigError(
                f"model config {config.name!r} has vocab_size: null and the default vocabulary "
                "is not available; pass --vocab-size"
            ) from None
    return config.resolve_vocab_size(vocab_size)


def _info(args):
    from t5pre.errors import ConfigError
    from t5pre.models.config import T5Config
    from t5pre.models.info import parameter_counts, training_flops
    from t5pre.training.memory import memory_per_device

    if args.inputs_length < 1 or args.targets_length < 1:
        raise ConfigError("--inputs-length and --targets-length must be >= 1")
    if args.batch_size < 1 or args.devices < 1:
        raise ConfigError("--batch-size and --devices must be >= 1")
    config = _resolve(T5Config.from_name_or_path(args.config), args.vocab_size)
    counts = parameter_counts(config)
    flops = training_flops(config, args.inputs_length, args.targets_length)
    head = "tied to the embedding (T5 1.0)" if config.tie_word_embeddings else "untied"
    print(f"model {config.name or args.config}: d_model {config.d_model}, {config.num_heads} heads "
          f"x d_kv {config.d_kv}, d_ff {config.d_ff} ({config.feed_forward_proj}), "
          f"{config.num_encoder_layers}+{config.num_decoder_layers} layers, "
          f"{config.vocab_size} embedding rows, head {head}")
    print("parameters:")
    for part in ("embedding", "encoder", "decoder", "head", "total"):
        print(f"  {part:<10} {counts[part]:>15,}")
    print(f"training FLOPs (inputs {args.inputs_length}, targets {args.targets_length}):")
    print(f"  per example {flops['training_per_example']:>15.4g}")
    print(f"  per token   {flops['training_per_token']:>15.4g}   (attention {flops['attention_share']:.1%} of it)")
    memory = {remat: memory_per_device(
        config, batch_size=args.batch_size, inputs_length=args.inputs_length,
        targets_length=args.targets_length, optimizer=args.optimizer, devices=args.devices,
        strategy=args.strategy, precision=args.precision, remat=remat) for remat in (False, True)}
    print(f"memory per device (estimate; batch {args.batch_size} over {args.devices} device(s), "
          f"{args.strategy}, {args.optimizer}, {args.precision}), MiB:")
    for part in ("parameters", "gradients", "optimizer_state"):
        print(f"  {part:<16} {memory[False][part] / 2**20:>12,.1f}")
    for part in ("activations", "total"):
        print(f"  {part:<16} {memory[False][part] / 2**20:>12,.1f}   (with remat: "
              f"{memory[True][part] / 2**20:,.1f})")
    return 0
