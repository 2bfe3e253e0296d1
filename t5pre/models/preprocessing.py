"""`Seq2SeqPreprocessor`: text <-> ids for generation, the one convention shared by
`t5pre predict`, `t5pre evaluate`, fine-tuning's evaluation and the exported SavedModel.

Input convention: the text is tokenised, cut to `max_input_length - 1` tokens and EOS is
appended; a batch is padded with id 0 to its longest row, and the padding mask is 1 on real
tokens. Output convention: generated ids are read up to the first EOS, padding dropped.

Each direction exists twice, with the same result: in Python/numpy (`encode_batch`, `decode`),
and as TensorFlow ops (`encode_tf`, `decode_tf`) for the serving graph, where tensorflow-text's
SentencePiece tokenizer runs inside the SavedModel.
"""

from __future__ import annotations

from typing import Sequence


class Seq2SeqPreprocessor:
    def __init__(self, vocabulary, max_input_length: int):
        self.vocabulary = vocabulary
        self.max_input_length = int(max_input_length)

    # ------------------------------------------------------------------ python / numpy
    def encode_batch(self, texts: Sequence[str]):
        """int32 ids [B, W] and padding mask [B, W] for a batch of texts."""
        limit = self.max_input_length - 1
        eos = self.vocabulary.eos_id
        return self.pad_batch([self.vocabulary.encode(text)[:limit] + [eos] for text in texts])

    def pad_batch(self, rows):
        """Token-id rows (already tokenised, EOS included) -> zero-padded ids and padding mask,
        as wide as the longest row."""
        import numpy as np

        width = max(len(row) for row in rows)
        ids = np.zeros((len(rows), width), "int32")
        mask = np.zeros((len(rows), width), "int32")
        for i, row in enumerate(rows):
            ids[i, :len(row)] = row
            mask[i, :len(row)] = 1
        return ids, mask

    def decode(self, tokens) -> list:
        """One string per row of generated ids (stops at EOS, drops padding)."""
        import numpy as np

        return [self.vocabulary.decode([int(t) for t in row]) for row in np.asarray(tokens)]

    # ------------------------------------------------------------------ in-graph (TensorFlow)
    def encode_tf(self, texts):
        """1-D tf.string -> (ids int32 [B, W], padding mask int32 [B, W]), as `encode_batch`."""
        import tensorflow as tf

        vocabulary = self.vocabulary
        tokens = vocabulary.encode_tf(texts)[:, : self.max_input_length - 1]
        eos = tf.fill([tokens.nrows(), 1], tf.constant(vocabulary.eos_id, tf.int32))
        tokens = tf.concat([tokens, tf.RaggedTensor.from_tensor(eos)], axis=1)
        ids = tokens.to_tensor(default_value=vocabulary.pad_id)
        mask = tf.sequence_mask(tokens.row_lengths(), maxlen=tf.shape(ids)[1], dtype=tf.int32)
        return ids, mask

    def decode_tf(self, tokens):
        """int ids [B, L] -> tf.string [B], as `decode`."""
        return self.vocabulary.decode_tf(tokens)
