"""`T5Model`: a compact T5.1.1 (and T5 1.0) encoder-decoder as a `keras.Model`.

Why our own and not keras-hub's `T5Backbone` (keras-hub 0.32 has one): measured on this stack it
trained at 0.69-0.72x the tokens/s of HF PyTorch T5 on the same CPU config and batch, and it has
no segment ids / positions, so it cannot train on packed batches (T5's default). This model is
written with `keras.ops` only, runs on the TensorFlow and JAX backends, and reads the feature
dict of `EncDecFeatureConverter` directly (see docs/architecture.md).

All weights are created in `__init__` (not lazily on the first call): a model built under a
`tf.distribute` strategy scope has every variable there, and `load_weights` / checkpoint restore
work before any data has been seen.

Precision follows the Keras dtype policy: under `mixed_bfloat16` / `mixed_float16` the matmuls
run in low precision, while layer-norm statistics, attention softmax and the returned logits are
float32.
"""

from __future__ import annotations

import keras
from keras import ops

from t5pre.models.config import T5Config
from t5pre.models.layers import (
    MASK_VALUE,
    RelativePositionBias,
    T5DecoderBlock,
    T5EncoderBlock,
    T5LayerNorm,
    _compute,
)


def _mask_to_bias(allowed):
    """bool mask -> float32 additive bias (0 where allowed, -1e9 where not)."""
    return ops.where(allowed, 0.0, MASK_VALUE)


def _as_int(x):
    return None if x is None else ops.cast(ops.convert_to_tensor(x), "int32")


@keras.saving.register_keras_serializable(package="t5pre")
class T5Model(keras.Model):
    """T5 encoder-decoder. `model(features)` -> float32 logits [B, M, vocab_size].

    `features` holds `encoder_token_ids`, `encoder_padding_mask`, `decoder_token_ids`,
    `decoder_padding_mask` and, for packed batches, `encoder_segment_ids`, `encoder_positions`,
    `decoder_segment_ids`, `decoder_positions` (other keys, e.g. targets, are ignored). With
    segment ids, attention stays within a segment; with positions, relative positions come from
    them (they restart at 0 per packed example).

    For decoding: `encode(...)`, `cross_key_values(...)`, `init_cache(...)`, `decode_step(...)`
    (see t5pre/models/decoding.py).
    """

    def __init__(self, config, **kwargs):
        if isinstance(config, dict):
            config = T5Config.from_dict(config)
        vocab_size = config.require_vocab_size()
        kwargs.setdefault("name", "t5")
        super().__init__(**kwargs)
        self.config = config
        d = config.d_model
        dtype = self.dtype_policy
        rate = config.dropout_rate

        def dropout(name):
            return keras.layers.Dropout(rate, dtype=dtype, name=name) if rate else None

        def block_args():
            return dict(
                hidden_dim=d, num_heads=config.num_heads, key_value_dim=config.d_kv,
                intermediate_dim=config.d_ff, activation=config.feed_forward_proj,
                dropout_rate=rate, layer_norm_epsilon=config.layer_norm_epsilon, dtype=dtype,
            )

        def position_bias(bidirectional, name):
            return RelativePositionBias(
                config.num_heads, config.relative_attention_num_buckets,
                config.relative_attention_max_distance, bidirectional=bidirectional,
                initializer_stddev=d**-0.5, dtype=dtype, name=name,
            )

        self.token_embedding = keras.layers.Embedding(
            vocab_size, d, embeddings_initializer=keras.initializers.RandomNormal(stddev=1.0),
            dtype=dtype, name="token_embedding",
        )
        self.encoder_position_bias = position_bias(True, "encoder_position_bias")
        self.encoder_blocks = [
            T5EncoderBlock(**block_args(), name=f"encoder_block_{i}")
            for i in range(config.num_encoder_layers)
        ]
        self.encoder_final_norm = T5LayerNorm(d, config.layer_norm_epsilon, dtype=dtype,
                                              name="encoder_final_norm")
        self.decoder_position_bias = position_bias(False, "decoder_position_bias")
        self.decoder_blocks = [
            T5DecoderBlock(**block_args(), name=f"decoder_block_{i}")
            for i in range(config.num_decoder_layers)
        ]
        self.decoder_final_norm = T5LayerNorm(d, config.layer_norm_epsilon, dtype=dtype,
                                              name="decoder_final_norm")
        self.lm_head = None
        if not config.tie_word_embeddings:
            # t5x's init for the logits layer (fan-in variance scaling): stddev d_model ** -0.5.
            self.lm_head = keras.layers.Dense(
                vocab_size, use_bias=False, dtype=dtype, name="lm_head",
                kernel_initializer=keras.initializers.RandomNormal(stddev=d**-0.5),
            )
        self.embedding_dropout = dropout("embedding_dropout")
        self.encoder_output_dropout = dropout("encoder_output_dropout")
        self.decoder_embedding_dropout = dropout("decoder_embedding_dropout")
        self.decoder_output_dropout = dropout("decoder_output_dropout")
        self._build_all()

    def _build_all(self):
        self.token_embedding.build((None, None))
        for layer in (self.encoder_position_bias, self.encoder_final_norm,
                      self.decoder_position_bias, self.decoder_final_norm,
                      *self.encoder_blocks, *self.decoder_blocks):
            layer.build()
        if self.lm_head is not None:
            self.lm_head.build((None, None, self.config.d_model))
        self.built = True

    # -- helpers ----------------------------------------------------------------------------

    def _remat(self, block_call, training):
        """With ``config.remat``, a training block call whose activations are recomputed in the
        backward pass (``keras.remat``: ``jax.checkpoint`` / ``tf.recompute_grad``) instead of
        kept: memory for compute. Only tensors go through the wrapper."""
        return keras.remat(block_call) if self.config.remat and training else block_call

    @staticmethod
    def _drop(layer, x, training):
        return x if layer is None else layer(x, training=training)

    @staticmethod
    def _positions(token_ids, positions):
        if positions is not None:
            return positions
        return ops.arange(ops.shape(token_ids)[1], dtype="int32")[None, :]

    def _embed(self, token_ids, dropout, training):
        return self._drop(dropout, self.token_embedding(token_ids), training)

    # -- encoder ----------------------------------------------------------------------------

    def encode(self, token_ids, padding_mask=None, segment_ids=None, positions=None,
               training=None):
        """Encoder outputs [B, N, d_model] (compute dtype)."""
        token_ids = _as_int(token_ids)
        padding_mask = ops.ones_like(token_ids) if padding_mask is None else _as_int(padding_mask)
        segment_ids, positions = _as_int(segment_ids), _as_int(positions)
        positions = self._positions(token_ids, positions)
        bias = self.encoder_position_bias(positions, positions)
        allowed = ops.cast(padding_mask, "bool")[:, None, None, :]
        if segment_ids is not None:
            same = segment_ids[:, :, None] == segment_ids[:, None, :]
            allowed = ops.logical_and(allowed, same[:, None])
        bias = bias + _mask_to_bias(allowed)
        x = self._embed(token_ids, self.embedding_dropout, training)
        for block in self.encoder_blocks:
            x = self._remat(lambda h, b, block=block: block(h, b, training=training),
                            training)(x, bias)
        x = self.encoder_final_norm(x)
        return self._drop(self.encoder_output_dropout, x, training)

    # -- decoder ----------------------------------------------------------------------------

    def decode(self, token_ids, encoder_outputs, encoder_padding_mask=None, padding_mask=None,
               segment_ids=None, positions=None, encoder_segment_ids=None, training=None):
        """Full (teacher-forced) decoder pass -> float32 logits [B, M, vocab_size]."""
        token_ids = _as_int(token_ids)
        padding_mask = ops.ones_like(token_ids) if padding_mask is None else _as_int(padding_mask)
        segment_ids, positions = _as_int(segment_ids), _as_int(positions)
        encoder_segment_ids = _as_int(encoder_segment_ids)
        length = ops.shape(token_ids)[1]
        positions = self._positions(token_ids, positions)
        self_bias = self.decoder_position_bias(positions, positions)
        index = ops.arange(length, dtype="int32")
        causal = (index[None, :] <= index[:, None])[None, None]  # [1, 1, M, M]
        allowed = ops.logical_and(causal, ops.cast(padding_mask, "bool")[:, None, None, :])
        if segment_ids is not None:
            same = segment_ids[:, :, None] == segment_ids[:, None, :]
            allowed = ops.logical_and(allowed, same[:, None])
        self_bias = self_bias + _mask_to_bias(allowed)

        if encoder_padding_mask is None:
            encoder_padding_mask = ops.ones(ops.shape(encoder_outputs)[:2], dtype="int32")
        cross_allowed = ops.cast(_as_int(encoder_padding_mask), "bool")[:, None, None, :]
        if segment_ids is not None and encoder_segment_ids is not None:
            same = segment_ids[:, :, None] == encoder_segment_ids[:, None, :]
            cross_allowed = ops.logical_and(cross_allowed, same[:, None])
        cross_bias = _mask_to_bias(cross_allowed)

        x = self._embed(token_ids, self.decoder_embedding_dropout, training)
        for block in self.decoder_blocks:
            x = self._remat(
                lambda h, sb, cb, enc, block=block: block(h, sb, cb, encoder_outputs=enc,
                                                          training=training),
                training)(x, self_bias, cross_bias, encoder_outputs)
        x = self.decoder_final_norm(x)
        x = self._drop(self.decoder_output_dropout, x, training)
        return self.logits(x)

    def logits(self, decoder_hidden):
        """Decoder hidden states -> float32 logits (the matmul runs in the compute dtype)."""
        if self.lm_head is not None:
            return ops.cast(self.lm_head(decoder_hidden), "float32")
        # T5 1.0: tied head; the decoder output is rescaled by d_model ** -0.5 first.
        x = decoder_hidden * ops.cast(self.config.d_model**-0.5, decoder_hidden.dtype)
        embeddings = _compute(self.token_embedding, self.token_embedding.embeddings)
        return ops.cast(ops.matmul(x, ops.transpose(embeddings)), "float32")

    def call(self, inputs, training=None):
        encoder_outputs = self.encode(
            inputs["encoder_token_ids"],
            inputs.get("encoder_padding_mask"),
            segment_ids=inputs.get("encoder_segment_ids"),
            positions=inputs.get("encoder_positions"),
            training=training,
        )
        return self.decode(
            inputs["decoder_token_ids"],
            encoder_outputs,
            encoder_padding_mask=inputs.get("encoder_padding_mask"),
            padding_mask=inputs.get("decoder_padding_mask"),
            segment_ids=inputs.get("decoder_segment_ids"),
            positions=inputs.get("decoder_positions"),
            encoder_segment_ids=inputs.get("encoder_segment_ids"),
            training=training,
        )

    # -- cached decoding --------------------------------------------------------------------

    def init_cache(self, batch_size, max_length):
        """Zeroed self-attention key/value cache: a tuple of one (keys, values) pair per decoder
        layer, each [B, H, max_length, d_kv] (separate tensors: no step slices or re-stacks
        them; beam search reorders the batch axis 0)."""
        c = self.config
        shape = (batch_size, c.num_heads, max_length, c.d_kv)
        return tuple((ops.zeros(shape, self.compute_dtype), ops.zeros(shape, self.compute_dtype))
                     for _ in range(c.num_decoder_layers))

    def cross_key_values(self, encoder_outputs):
        """Cross-attention (keys, values) of every decoder layer, each [B, H, N, d_kv], computed
        once per decode."""
        return tuple(block.cross_attention.cross_key_values(encoder_outputs)
                     for block in self.decoder_blocks)

    def decode_step(self, token_ids, cache_index, cache, cross_key_values, encoder_padding_mask,
                    beams=1):
        """One decoder step for tokens [B] at position `cache_index` (scalar int).

        Returns (float32 logits [B, vocab_size], updated cache). The cache is preallocated at
        the maximum decode length; positions after `cache_index` are masked out. With `beams`
        > 1 (beam search), `token_ids` and the cache hold `beams` adjacent rows per example
        while `cross_key_values` and `encoder_padding_mask` hold one per example.
        """
        token_ids = _as_int(token_ids)
        cache_index = ops.cast(cache_index, "int32")
        steps = ops.shape(cache[0][0])[2]
        key_positions = ops.arange(steps, dtype="int32")
        bias = self.decoder_position_bias(ops.reshape(cache_index, (1, 1)), key_positions[None, :])
        bias = bias + _mask_to_bias(key_positions <= cache_index)[None, None, None, :]
        cross_bias = _mask_to_bias(ops.cast(_as_int(encoder_padding_mask), "bool"))[:, None, None, :]
        x = self.token_embedding(token_ids[:, None])
        new_cache = []
        for block, layer_cache, layer_cross in zip(self.decoder_blocks, cache, cross_key_values):
            x, layer_cache = block(x, bias, cross_bias, cross_key_values=layer_cross,
                                   cache=layer_cache, cache_index=cache_index, beams=beams)
            new_cache.append(layer_cache)
        x = self.decoder_final_norm(x)
        return self.logits(x)[:, 0], tuple(new_cache)

    # -- Keras compile() / fit() ----------------------------------------------------------

    def compile(self, optimizer="adam", loss=None, z_loss=0.0, **kwargs):
        """`keras.Model.compile`, plus `z_loss` (t5x's 1e-4 in pretraining) for `compute_loss`.

        Without a `loss`, `fit` / `evaluate` optimise what t5pre's trainer does: cross-entropy
        averaged over the target tokens (`sample_weight` = the loss weights, 0 on padding) plus
        the z-loss. Feed it `(features, decoder_target_ids, decoder_loss_weights)` batches, e.g.
        from `t5pre.training.keras_fit.keras_dataset`. A given `loss` replaces all this.
        """
        self.z_loss = float(z_loss)
        super().compile(optimizer=optimizer, loss=loss, **kwargs)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Token-mean cross-entropy + z-loss of `y_pred` (logits) against `y` (target ids)."""
        if getattr(self, "loss", None) is not None or y is None or y_pred is None:
            return super().compute_loss(x, y, y_pred, sample_weight, training)
        from t5pre.models.losses import seq2seq_loss

        weights = ops.not_equal(y, 0) if sample_weight is None else sample_weight
        loss, _ = seq2seq_loss(y, y_pred, weights, z_loss=getattr(self, "z_loss", 0.0))
        for extra in self.losses:  # add_loss() terms, as keras.Model.compute_loss adds them
            loss = loss + ops.cast(ops.sum(extra), "float32")
        return loss

    # -- serialisation ----------------------------------------------------------------------

    def get_config(self):
        return {"name": self.name, "config": self.config.to_dict()}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        return cls(T5Config.from_dict(config.pop("config")), **config)
