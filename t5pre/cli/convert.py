"""`t5pre convert hf PATH OUT_DIR`: a Hugging Face T5 checkpoint -> a t5pre model directory."""


def register(subparsers):
    parser = subparsers.add_parser(
        "convert",
        help="convert a Hugging Face T5 checkpoint to a t5pre model directory",
        description="Convert checkpoints from other libraries into t5pre's model directory "
        "layout (model_config.json, model.weights.h5, spiece.model, vocab.json).",
    )
    sources = parser.add_subparsers(dest="source", metavar="SOURCE", required=True)
    hf = sources.add_parser(
        "hf",
        help="a Hugging Face T5 / T5.1.1 / Flan-T5 / mT5 directory",
        description="Reads config.json, model.safetensors (or a sharded index, or "
        "pytorch_model.bin with torch) and spiece.model when present. No network access: "
        "PATH is a local directory (e.g. a snapshot of the HF cache).",
    )
    hf.add_argument("path", metavar="PATH", help="directory of the Hugging Face checkpoint")
    hf.add_argument("out_dir", metavar="OUT_DIR", help="model directory to write")
    hf.add_argument("--extra-ids", type=int, default=None,
                    help="sentinels to add to spiece.model (default: tokenizer_config.json's "
                    "extra_ids, else 100)")
    hf.set_defaults(func=_convert_hf)


def _convert_hf(args):
    from t5pre.files import check_output_path
    from t5pre.models.hf_convert import convert_hf
    from t5pre.models.info import parameter_counts

    check_output_path(args.out_dir, flag=None, directory=True)  # before reading the checkpoint
    out_dir, model, vocabulary = convert_hf(args.path, args.out_dir, extra_ids=args.extra_ids)
    config = model.config
    kind = "T5 1.0 (tied head, relu)" if config.tie_word_embeddings else (
        f"untied head, {config.feed_forward_proj}")
    vocab = f"vocabulary {vocabulary.vocab_size} ids" if vocabulary else "no spiece.model"
    total = parameter_counts(config)["total"]
    print(f"wrote {out_dir}: {kind}, d_model {config.d_model}, "
          f"{config.num_encoder_layers}+{config.num_decoder_layers} layers, "
          f"{config.vocab_size} embedding rows, {vocab}, {total:,} parameters")
    return 0
