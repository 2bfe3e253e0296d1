"""Does a pretrained model use its encoder? Its pretraining loss on the validation documents of
``debian-descriptions`` with each example's own inputs, with another example's inputs (the shuffled
batch rolled by half its size), and with the encoder masked down to its first token.

If "own" and "another example's" are about equal, the decoder predicts its targets from its own
prefix and from what any input of the domain tells it (a language model of the targets): the
encoder carries no information specific to the example. That is what ``benchmarks/transfer.py``
found for its tiny model after 25M tokens of span corruption.

    python benchmarks/encoder_probe.py --model-dir /tmp/tr5/debian/pretrain --data-dir ../shared/data
    python benchmarks/encoder_probe.py --model-dir /tmp/tr6/debian/pretrain-iid_denoising \
        --objective iid_denoising --data-dir ../shared/data
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
    p.add_argument("--objective", default="span_corruption",
                   choices=["span_corruption", "prefix_lm", "iid_denoising"],
                   help="the objective the checkpoint was pretrained with (transfer.py's choices)")
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    import numpy as np

    import transfer
    from t5pre.data.feature_converter import EncDecFeatureConverter
    from t5pre.data.registry import TaskRegistry
    from t5pre.models.losses import seq2seq_loss
    from t5pre.models.t5 import T5Model
    from t5pre.models.store import read_init, resolve_init

    transfer._register_debian_pretraining(args.data_dir, args.objective)
    init = read_init(resolve_init(args.model_dir))
    model = T5Model(init.config)
    keys = ("encoder_token_ids", "encoder_padding_mask", "decoder_token_ids",
            "decoder_padding_mask")
    model({k: np.ones((1, 4), "int32") for k in keys})
    print(init.load_into(model))
    inputs_length, targets_length = transfer.PRETRAIN_LENGTHS[args.objective]
    lengths = {"inputs": inputs_length, "targets": targets_length}
    task = TaskRegistry.get(transfer.MODES["debian"]["pretrain_task"])
    # shuffled: consecutive chunks come from the same or an alphabetically neighbouring package,
    # so rolling an unshuffled batch by one would swap in nearly the same context
    ds = task.get_dataset(lengths, split="validation", shuffle=True, seed=1)
    ds = EncDecFeatureConverter(pack=False)(ds, lengths).batch(args.batch_size).take(args.batches)
    for batch in ds:
        b = {k: v.numpy() for k, v in batch.items()}
        own = {k: b[k] for k in keys}
        other = dict(own)
        masked = dict(own)
        masked["encoder_padding_mask"] = np.zeros_like(own["encoder_padding_mask"])
        masked["encoder_padding_mask"][:, 0] = 1
        for k in ("encoder_token_ids", "encoder_padding_mask"):
            other[k] = np.roll(own[k], len(own[k]) // 2, axis=0)
        row = []
        for name, features in (("own inputs", own), ("another example's inputs", other),
                               ("encoder masked", masked)):
            loss, m = seq2seq_loss(b["decoder_target_ids"], model(features),
                                   b["decoder_loss_weights"])
            row.append(f"{name}: loss {float(loss):.3f} acc {float(m['accuracy']):.3f}")
        print(" | ".join(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
