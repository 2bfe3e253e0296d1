"""Parameter counts and training FLOPs of a T5 config, computed from the config alone (no model is
built, so `t5pre model info xl` is instant).

FLOPs formula (matmuls only; norms, softmax, embedding lookups are negligible). For inputs of
length N and targets of length M, with P_enc / P_dec the weight-matrix parameters of the encoder
/ decoder layers, P_head = vocab_size * d_model (the output matmul, tied or not), I = num_heads *
d_kv:

    forward  = 2 * (P_enc * N + P_dec * M + P_head * M)              # 2 FLOPs per weight per token
             + 4 * I * (L_enc * N^2 + L_dec * (M^2 + M * N))          # QK^T and AV, full matrices
    training = 3 * forward                                            # backward ~ 2x forward

`per_token` divides the training FLOPs of one example by N + M (its input + target tokens).
This is the "6 x non-embedding parameters" rule with the attention terms written out and the
decoder/head counted on target tokens only.

The memory estimate of training, which also needs the optimizer's state, is
:func:`t5pre.training.memory.memory_per_device`, built on :func:`activation_elements` and
:func:`all_parameter_shapes` here.
"""

from __future__ import annotations

import math

from t5pre.models.config import T5Config


def parameter_shapes(config: T5Config) -> dict:
    """The shapes of the model's trainable variables by part (embedding, encoder, decoder, head),
    the same shapes `T5Model` creates."""
    d, f, inner = config.d_model, config.d_ff, config.inner_dim
    v = config.require_vocab_size()
    ff = [(d, 2 * f if config.is_gated else f), (f, d)]
    self_attention = [(d, 3 * inner), (inner, d)]
    cross_attention = [(d, inner), (d, 2 * inner), (inner, d)]
    bias = [(config.relative_attention_num_buckets, config.num_heads)]
    encoder_layer = [(d,), *self_attention, (d,), *ff]
    decoder_layer = [(d,), *self_attention, (d,), *cross_attention, (d,), *ff]
    return {
        "embedding": [(v, d)],
        "encoder": bias + encoder_layer * config.num_encoder_layers + [(d,)],
        "decoder": bias + decoder_layer * config.num_decoder_layers + [(d,)],
        "head": [] if config.tie_word_embeddings else [(d, v)],
    }


def all_parameter_shapes(config: T5Config) -> list:
    return [s for shapes in parameter_shapes(config).values() for s in shapes]


def parameter_counts(config: T5Config) -> dict:
    """Trainable parameters by part: embedding, encoder, decoder, head, total."""
    counts = {part: sum(math.prod(s) for s in shapes)
              for part, shapes in parameter_shapes(config).items()}
    counts["total"] = sum(counts.values())
    return counts


def training_flops(config: T5Config, inputs_length: int, targets_length: int) -> dict:
    """Training FLOPs of one example (see the module docstring for the formula)."""
    d, f, inner = config.d_model, config.d_ff, config.inner_dim
    v = config.require_vocab_size()
    n, m = inputs_length, targets_length
    ff = d * f * (2 if config.is_gated else 1) + f * d
    enc_layer = d * 3 * inner + inner * d + ff
    dec_layer = enc_layer + d * inner + d * 2 * inner + inner * d
    p_enc, p_dec = config.num_encoder_layers * enc_layer, config.num_decoder_layers * dec_layer
    dense = 2 * (p_enc * n + p_dec * m + v * d * m)
    attention = 4 * inner * (config.num_encoder_layers * n * n
                             + config.num_decoder_layers * (m * m + m * n))
    forward = dense + attention
    training = 3 * forward
    return {
        "forward_per_example": forward,
        "training_per_example": training,
        "training_per_token": training / (n + m),
        "attention_share": attention / forward,
    }


def training_flops_per_token(config: T5Config, inputs_length: int = 512, targets_length: int = 114) -> float:
    return training_flops(config, inputs_length, targets_length)["training_per_token"]



def activation_elements(config: T5Config, inputs_length: int, targets_length: int,
                        remat: bool = False) -> int:
    """Activations one example keeps for the backward pass (elements; a rough count).

    Per encoder layer and input token: ``6 d + 4 I + F + 2 H N`` (norm inputs/outputs and
    residuals, q/k/v/context, the feed-forward hidden ``F`` = 3 d_ff gated / 2 d_ff ReLU, attention
    scores and probabilities over N keys). Per decoder layer and target token: ``9 d + 6 I + F +
    2 H (M + N)``, plus cross keys/values ``2 I`` per input token. The head keeps logits and
    probabilities, ``2 V`` per target token. With rematerialisation only each block's input (``d``
    per token and layer) is kept, plus one block's activations while it is recomputed."""
    d, inner, h = config.d_model, config.inner_dim, config.num_heads
    v = config.require_vocab_size()
    n, m = inputs_length, targets_length
    ff = (3 if config.is_gated else 2) * config.d_ff
    enc_layer = n * (6 * d + 4 * inner + ff + 2 * h * n)
    dec_layer = m * (9 * d + 6 * inner + ff + 2 * h * (m + n)) + n * 2 * inner
    head = 2 * v * m
    if remat:
        inputs = config.num_encoder_layers * n * d + config.num_decoder_layers * m * d
        return inputs + max(enc_layer, dec_layer) + head
    return config.num_encoder_layers * enc_layer + config.num_decoder_layers * dec_layer + head
