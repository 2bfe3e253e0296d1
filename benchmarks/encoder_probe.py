"""Does a pretrained model use its encoder? Span-corruption loss with each example's own inputs vs
with another example's inputs (the batch rolled by one), on the validation documents of
``debian-descriptions``.

If the two losses are about equal, the decoder predicts the corrupted spans from its own prefix
alone (a language model of the spans) and the encoder carries no information yet: what
``benchmarks/transfer.py`` found for its tiny model after 25M pretraining tokens.

    python benchmarks/encoder_probe.py --model-dir /tmp/tr5/debian/pretrain --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model-dir", required=True, help="a t5pre pretraining model directory")
    p.add_argument("--data-dir", default="../shared/data", help="holds debian-descriptions/")
    p.add_argument("--batches", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=128)
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    import numpy as np

    import transfer
    from t5pre.data.feature_converter import EncDecFeatureConverter
    from t5pre.data.registry import TaskRegistry
    from t5pre.models.losses import seq2seq_loss
    from t5pre.models.t5 import T5Model
    from t5pre.training.finetune import read_init, resolve_init

    transfer._register_debian_pretraining(args.data_dir, "span_corruption")
    init = read_init(resolve_init(args.model_dir))
    model = T5Model(init.config)
    keys = ("encoder_token_ids", "encoder_padding_mask", "decoder_token_ids",
            "decoder_padding_mask")
    model({k: np.ones((1, 4), "int32") for k in keys})
    print(init.load_into(model))
    lengths = {"inputs": 64, "targets": 14}
    task = TaskRegistry.get(transfer.MODES["debian"]["pretrain_task"])
    ds = task.get_dataset(lengths, split="validation", shuffle=False)
    ds = EncDecFeatureConverter(pack=False)(ds, lengths).batch(args.batch_size).take(args.batches)
    for batch in ds:
        b = {k: v.numpy() for k, v in batch.items()}
        own = {k: b[k] for k in keys}
        other = dict(own)
        for k in ("encoder_token_ids", "encoder_padding_mask"):
            other[k] = np.roll(own[k], 1, axis=0)
        row = []
        for name, features in (("own inputs", own), ("another example's inputs", other)):
            loss, m = seq2seq_loss(b["decoder_target_ids"], model(features),
                                   b["decoder_loss_weights"])
            row.append(f"{name}: loss {float(loss):.3f} acc {float(m['accuracy']):.3f}")
        print(" | ".join(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
