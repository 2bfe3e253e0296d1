"""Decode texts with a model directory: the shared back end of `t5pre predict`, `t5pre evaluate`
and `t5pre export`.

Models are read with `t5pre.models.store.load_for_inference` (training directories,
save_pretrained directories and fine-tuning's best/).

Input convention (the same in the exported SavedModel, so that both give the same strings): the
text is tokenised, cut to `max_input_length - 1` tokens and EOS is appended; a batch is padded
with id 0 to its longest row. Beam size 1 means greedy decoding.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Iterator, Optional, Sequence

from t5pre.errors import ConfigError
from t5pre.models.store import LoadedModel, load_for_inference  # noqa: F401 (re-exported)

DEFAULT_MAX_INPUT_LENGTH = 512
DEFAULT_MAX_DECODE_LENGTH = 128
DEFAULT_LENGTH_PENALTY = 0.6  # T5/t5x beam-search alpha
DEFAULT_BATCH_SIZE = 32


@dataclasses.dataclass
class DecodeSettings:
    """How to decode: lengths in tokens (EOS included), beam size (1 = greedy), alpha.

    `None` lengths are filled from the model directory (`resolved_for`)."""

    beam: int = 1
    length_penalty: float = DEFAULT_LENGTH_PENALTY
    max_decode_length: Optional[int] = None
    max_input_length: Optional[int] = None

    def validate(self) -> "DecodeSettings":
        if not isinstance(self.beam, int) or self.beam < 1:
            raise ConfigError(f"--beam must be an integer >= 1, got {self.beam!r}")
        for name in ("max_decode_length", "max_input_length"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                flag = "--" + name.replace("_", "-")
                raise ConfigError(f"{flag} must be an integer >= 1, got {value!r}")
        if self.max_input_length is not None and self.max_input_length < 2:
            # one token of text plus EOS is the least an encoder input can hold
            raise ConfigError(f"--max-input-length must be >= 2, got {self.max_input_length}")
        if not isinstance(self.length_penalty, (int, float)) or self.length_penalty < 0:
            raise ConfigError(f"--length-penalty must be >= 0, got {self.length_penalty!r}")
        return self

    def resolved_for(self, run_config) -> "DecodeSettings":
        """Fill unset lengths from the run config's sequence lengths (or the defaults)."""
        inputs, targets = DEFAULT_MAX_INPUT_LENGTH, DEFAULT_MAX_DECODE_LENGTH
        if run_config is not None:
            inputs = int(run_config.data.sequence_length.inputs)
            targets = int(run_config.data.sequence_length.targets)
        return dataclasses.replace(
            self,
            max_input_length=self.max_input_length or max(inputs, 2),
            max_decode_length=self.max_decode_length or targets,
        ).validate()

    @property
    def method(self) -> str:
        return "greedy" if self.beam == 1 else "beam"

    def decode_kwargs(self) -> dict:
        """Keyword arguments of `t5pre.models.decoding.decode` (besides the inputs)."""
        kwargs = {"max_length": int(self.max_decode_length), "method": self.method}
        if self.method == "beam":
            kwargs.update(beam_size=int(self.beam), alpha=float(self.length_penalty))
        return kwargs


class Predictor:
    """Strings in, strings out with a loaded model (batched, compiled once per setting).

    `predict(texts)` returns one generated string per text; `predict_with_scores` also returns
    the sequence scores (summed log-probabilities; beam search: length-normalised).
    """

    def __init__(self, model, vocabulary, settings: DecodeSettings,
                 batch_size: int = DEFAULT_BATCH_SIZE):
        if batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1, got {batch_size}")
        settings.validate()
        if settings.max_input_length is None or settings.max_decode_length is None:
            settings = settings.resolved_for(None)
        self.model = model
        self.vocabulary = vocabulary
        self.settings = settings
        self.batch_size = batch_size
        self.loaded = None  # the LoadedModel when built by from_model_dir
        self._compiled = None

    @classmethod
    def from_model_dir(cls, model_dir, checkpoint=None, settings: DecodeSettings | None = None,
                       batch_size: int = DEFAULT_BATCH_SIZE) -> "Predictor":
        settings = (settings or DecodeSettings()).validate()
        loaded = load_for_inference(model_dir, checkpoint)
        predictor = cls(loaded.model, loaded.vocabulary, settings.resolved_for(loaded.run_config),
                        batch_size)
        predictor.loaded = loaded
        return predictor

    def encode_batch(self, texts: Sequence[str]):
        """int32 ids [B, width] and padding mask: tokens cut to `max_input_length - 1`, EOS
        appended, zero-padded to the longest row."""
        import numpy as np

        limit = self.settings.max_input_length - 1
        rows = [self.vocabulary.encode(t)[:limit] + [self.vocabulary.eos_id] for t in texts]
        width = max(len(r) for r in rows)
        ids = np.zeros((len(rows), width), "int32")
        mask = np.zeros((len(rows), width), "int32")
        for i, row in enumerate(rows):
            ids[i, : len(row)] = row
            mask[i, : len(row)] = 1
        return ids, mask

    def _decode_fn(self):
        """`decode` with this predictor's settings, compiled once: `tf.function` on TensorFlow
        (`reduce_retracing` keeps varying batch shapes to one trace), `jax.jit` on JAX."""
        if self._compiled is None:
            import keras

            from t5pre.models.decoding import decode

            model, kwargs = self.model, self.settings.decode_kwargs()

            def run(ids, mask):
                return decode(model, ids, mask, **kwargs)

            backend = keras.backend.backend()
            if backend == "tensorflow":
                import tensorflow as tf

                run = tf.function(run, reduce_retracing=True)
            elif backend == "jax":
                import jax

                run = jax.jit(run)  # one compile per batch shape
            self._compiled = run
        return self._compiled

    def generate_ids(self, texts: Sequence[str]):
        """(tokens int32 [B, max_decode_length], scores float32 [B]) for one batch of texts."""
        import numpy as np

        texts = _as_texts(texts)
        if not texts:
            return np.zeros((0, self.settings.max_decode_length), "int32"), np.zeros((0,), "float32")
        ids, mask = self.encode_batch(texts)
        tokens, scores = self._decode_fn()(ids, mask)
        return np.asarray(tokens), np.asarray(scores)

    def predict_with_scores(self, texts: Iterable[str]) -> list[tuple[str, float]]:
        return list(self.iter_predictions(texts))

    def predict(self, texts: Iterable[str]) -> list[str]:
        return [text for text, _ in self.iter_predictions(texts)]

    def iter_predictions(self, texts: Iterable[str]) -> Iterator[tuple[str, float]]:
        """(generated text, score) per input, decoding `batch_size` inputs at a time; `texts`
        may be a lazy iterable (a file), results come as soon as their batch is done."""
        for batch in _batched(_as_texts_iter(texts), self.batch_size):
            tokens, scores = self.generate_ids(batch)
            for row, score in zip(tokens, scores):
                yield self.vocabulary.decode([int(t) for t in row]), float(score)


def predict_texts(model_dir, texts: Iterable[str], checkpoint=None,
                  settings: DecodeSettings | None = None,
                  batch_size: int = DEFAULT_BATCH_SIZE) -> list[str]:
    """One-call helper: generated strings for `texts` with the model in `model_dir`."""
    return Predictor.from_model_dir(model_dir, checkpoint, settings, batch_size).predict(texts)


def _as_texts(texts) -> list[str]:
    return list(_as_texts_iter(texts))


def _as_texts_iter(texts) -> Iterator[str]:
    if isinstance(texts, (str, bytes)):
        texts = [texts]
    for t in texts:
        yield t.decode("utf-8", errors="replace") if isinstance(t, bytes) else str(t)


def _batched(items: Iterable, size: int) -> Iterator[list]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
