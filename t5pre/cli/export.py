"""``t5pre export``: a TensorFlow SavedModel that serves raw strings (TensorFlow Serving ready)."""

from __future__ import annotations

HELP = """\
Export a model directory (training directory, latest or --checkpoint STEP; a fine-tuning run's
best/ directory; or a save_pretrained directory) as a TensorFlow SavedModel that takes a batch
of raw strings and returns generated strings. Tokenisation (tensorflow-text SentencePiece), the
encoder, the cached decoding loop (greedy for --beam-size 1, else beam search) and
detokenisation all run inside the graph.

Signatures:
  serving_default  inputs: string[batch] -> outputs: string[batch], scores: float32[batch]
  generate_ids     inputs: string[batch] -> ids: int32[batch, L], scores, lengths: int32[batch]

The export is written into a temporary sibling directory and renamed to --out only when it is
complete, so a failed export never leaves a partial SavedModel. An existing --out is refused
unless --overwrite. For TensorFlow Serving, export into a numbered version directory of the
model base path, e.g. --out exports/my_t5/1.

Loading it needs tensorflow and tensorflow-text (which itself requires keras installed),
not t5pre: tf.saved_model.load(OUT).signatures["serving_default"](inputs=tf.constant([...])).
The stock TensorFlow Serving model server links the tensorflow-text ops; use a release at least
as new as the TensorFlow that wrote the export.

Decoding settings (beam size, length penalty, lengths) are fixed at export time; the lengths
default to those the model was trained or fine-tuned at (512 / 128 for a directory that does not
record them). They are recorded in OUT/assets.extra/t5pre_export.json.

example:
  t5pre export --model-dir runs/ft/best --out exports/my_t5/1
"""


def register(subparsers):
    from t5pre.cli.inference import add_inference_parser

    parser = add_inference_parser(subparsers, "export",
                                  help="export a strings-in/strings-out SavedModel",
                                  description=HELP)
    parser.add_argument("--out", required=True, metavar="EXPORT_DIR",
                        help="directory to create (e.g. exports/my_t5/1 for TF Serving)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing export")
    parser.add_argument("--format", choices=("savedmodel", "hf"), default="savedmodel",
                        help="savedmodel (default): the serving SavedModel described above; hf: "
                        "a Hugging Face T5 directory (config.json, model.safetensors, tokenizer "
                        "files; decoding flags do not apply; needs t5pre[hf])")
    parser.set_defaults(func=run)


def run(args):
    from t5pre.files import check_output_path

    # Fail fast, before loading anything: an existing export, a path under a file, a place
    # that cannot be written (both formats).
    check_output_path(args.out, flag="--out", directory=True, overwrite=args.overwrite)
    if args.format == "hf":
        from t5pre.cli import export_hf

        return export_hf.run(args)
    import os
    import time

    from t5pre.cli.inference import decode_settings
    from t5pre.models.store import load_for_inference
    from t5pre.export.saved_model import export_saved_model

    settings = decode_settings(args)
    start = time.time()
    loaded = load_for_inference(args.model_dir, args.checkpoint)
    settings = settings.resolved_for(loaded.sequence_length)
    path = export_saved_model(
        loaded.model, loaded.vocabulary, args.out, settings, overwrite=args.overwrite,
        metadata={"source": {"model_dir": os.path.abspath(loaded.model_dir),
                             "layout": loaded.layout,
                             "checkpoint": loaded.checkpoint}})
    print(f"exported {loaded.model_dir}"
          + (f" ({loaded.checkpoint})" if loaded.checkpoint else "")
          + f" to {path} in {time.time() - start:.1f}s: {settings.describe()}, inputs <= "
          f"{settings.max_input_length} tokens, outputs <= {settings.max_decode_length} tokens; "
          "signatures serving_default (strings) and generate_ids (ids, scores, lengths)")
    return 0
