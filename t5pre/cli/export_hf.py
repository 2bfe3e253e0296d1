"""``t5pre export --format hf``: a Hugging Face T5 directory (config.json, model.safetensors,
tokenizer files) that `transformers` loads offline. See t5pre/models/hf_export.py."""

from __future__ import annotations


def run(args):
    import time

    from t5pre.models.hf_export import export_model_dir

    start = time.time()
    out, loaded = export_model_dir(args.model_dir, args.out, args.checkpoint,
                                   overwrite=args.overwrite)
    config = loaded.model.config
    kind = "T5 1.0 (tied head)" if config.tie_word_embeddings else "T5.1.1 (untied head)"
    print(f"exported {loaded.model_dir}" + (f" ({loaded.checkpoint})" if loaded.checkpoint else "")
          + f" to {out} in {time.time() - start:.1f}s: {kind}, {config.feed_forward_proj}, "
          f"{config.vocab_size} embedding rows, vocabulary {loaded.vocabulary.vocab_size} ids; "
          "load with transformers.T5ForConditionalGeneration.from_pretrained(OUT) and "
          "AutoTokenizer.from_pretrained(OUT)")
    if not config.tie_word_embeddings:
        print("note: transformers >= 5 logs 'so we will NOT tie them' when it loads any T5.1.1 "
              "model (its T5Config sets tie_word_embeddings to true for every T5); expected: the "
              "untied head loads as exported")
    return 0
