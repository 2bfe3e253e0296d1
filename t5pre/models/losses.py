"""Sequence-to-sequence loss: token cross-entropy over non-padding targets, plus t5x's z-loss.

z-loss (`z_loss * log(Z)^2`, Z the softmax normaliser) keeps the logits from drifting, which
matters in bfloat16 training; t5x uses 1e-4 (our training configs set it, the default here is 0).
Everything is computed in float32 whatever the model's compute dtype.
"""

from __future__ import annotations

from keras import ops


def seq2seq_loss(target_ids, logits, loss_weights, z_loss=0.0):
    """Return `(loss, metrics)` for targets [B, M], logits [B, M, V], weights [B, M].

    `loss` = mean over weighted tokens of cross-entropy + z-loss term, where the mean divides by
    the sum of `loss_weights` (0 on padding, so padding never counts). `metrics` holds float32
    scalars: `loss` (the same total), `cross_entropy`, `z_loss` (the term added), `accuracy`
    (weighted argmax accuracy) and `num_tokens` (the weight sum, for averaging across replicas).
    """
    logits = ops.cast(logits, "float32")
    target_ids = ops.cast(target_ids, "int32")
    weights = ops.cast(loss_weights, "float32")
    log_z = ops.logsumexp(logits, axis=-1)  # [B, M]
    target_logit = ops.squeeze(ops.take_along_axis(logits, target_ids[..., None], axis=-1), -1)
    token_nll = log_z - target_logit
    num_tokens = ops.sum(weights)
    denominator = ops.maximum(num_tokens, 1e-8)  # an all-padding batch gives 0, not NaN
    cross_entropy = ops.sum(token_nll * weights) / denominator
    z_term = ops.cast(z_loss, "float32") * ops.sum(ops.square(log_z) * weights) / denominator
    loss = cross_entropy + z_term
    predictions = ops.cast(ops.argmax(logits, axis=-1), "int32")
    correct = ops.cast(ops.equal(predictions, target_ids), "float32")
    accuracy = ops.sum(correct * weights) / denominator
    metrics = {
        "loss": loss,
        "cross_entropy": cross_entropy,
        "z_loss": z_term,
        "accuracy": accuracy,
        "num_tokens": num_tokens,
    }
    return loss, metrics
