"""Train with Keras' own `model.compile()` / `model.fit()` on one host.

    import keras
    from t5pre.data.vocabulary import default_vocabulary
    from t5pre.models import T5Config, T5Model
    from t5pre.training.keras_fit import keras_dataset

    model = T5Model(T5Config.from_name("tiny").resolve_vocab_size(default_vocabulary()))
    model.compile(optimizer=keras.optimizers.AdamW(1e-3), z_loss=1e-4)
    train = keras_dataset("default_span_corruption", {"inputs": 128, "targets": 32}, batch_size=16)
    model.fit(train, steps_per_epoch=100, epochs=3)

`T5Model.compute_loss` gives the token-mean cross-entropy + z-loss of t5pre's trainer. This path
is for notebooks, callbacks and quick experiments on one machine (one device or
`MirroredStrategy`). Multi-worker training stays on `t5pre pretrain` / `finetune`: Keras 3
`fit` under `MultiWorkerMirroredStrategy` fails on dict batches (keras-team/keras#20585), and
t5pre's own loop also resumes the data stream exactly, which `fit` does not.
"""

from __future__ import annotations

from t5pre.training.data import make_dataset_fn

TARGETS, WEIGHTS = "decoder_target_ids", "decoder_loss_weights"


def keras_dataset(task, sequence_length: dict, *, batch_size: int, split: str = "train",
                  pack: bool = False, shuffle: bool = True, seed: int = 0, num_epochs=None,
                  feature_converter=None):
    """A `tf.data.Dataset` of `(x, y, sample_weight)` batches for `model.fit` / `evaluate`.

    `task`: a registered task or mixture name, or a task object. `x` is the model's feature
    dict (ids, padding masks, and segment ids / positions when `pack`), `y` the target ids
    [B, targets], `sample_weight` the loss weights [B, targets] (0 on padding). Batches are
    full (`drop_remainder`); `num_epochs=None` repeats forever (give `fit` a `steps_per_epoch`).
    """
    from t5pre.data.registry import get_task_or_mixture

    if isinstance(task, str):
        task = get_task_or_mixture(task)
    dataset_fn = make_dataset_fn(task, sequence_length, split=split, global_batch_size=batch_size,
                                 pack=pack, shuffle=shuffle, seed=seed, num_epochs=num_epochs,
                                 feature_converter=feature_converter)

    def split_features(features):
        features = dict(features)
        return features, features.pop(TARGETS), features.pop(WEIGHTS)

    return dataset_fn().map(split_features)

