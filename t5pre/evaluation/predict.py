"""Decode texts with a model directory: the shared back end of `t5pre predict`, `t5pre evaluate`
and `t5pre export`.

Models are read with `t5pre.models.store.load_for_inference` (training directories,
save_pretrained directories and fine-tuning's best/).

Input convention (the same in the exported SavedModel, so that both give the same strings): the
text is tokenised, cut to `max_input_length - 1` tokens and EOS is appended; a batch is padded
with id 0 to its longest row (`t5pre.models.preprocessing`). Beam size 1 means greedy decoding.
"""

from __future__ import annotations

from typing import Iterable, Iterator, Sequence

from t5pre.errors import ConfigError
from t5pre.models.decode_settings import DecodeSettings
from t5pre.models.store import load_for_inference

DEFAULT_BATCH_SIZE = 32


class Predictor:
    """Strings in, strings out with a loaded model (batched, compiled once per setting).

    `predict(texts)` returns one generated string per text; `predict_with_scores` also returns
    the sequence scores (summed log-probabilities; beam search: length-normalised). Text <-> ids
    is `self.preprocessor` (a `Seq2SeqPreprocessor`), decoding is `compile_decoder`'s function.
    """

    def __init__(self, model, vocabulary, settings: DecodeSettings,
                 batch_size: int = DEFAULT_BATCH_SIZE):
        from t5pre.models.preprocessing import Seq2SeqPreprocessor

        if batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1, got {batch_size}")
        settings = settings.validate()
        if settings.max_input_length is None or settings.max_decode_length is None:
            settings = settings.resolved_for(None)
        self.model = model
        self.vocabulary = vocabulary
        self.settings = settings
        self.batch_size = batch_size
        self.preprocessor = Seq2SeqPreprocessor(vocabulary, settings.max_input_length)
        self.loaded = None  # the LoadedModel when built by from_model_dir

    @classmethod
    def from_model_dir(cls, model_dir, checkpoint=None, settings: DecodeSettings | None = None,
                       batch_size: int = DEFAULT_BATCH_SIZE) -> "Predictor":
        """Unset lengths of `settings` default to the lengths the model was trained at."""
        settings = (settings or DecodeSettings()).validate()
        loaded = load_for_inference(model_dir, checkpoint)
        predictor = cls(loaded.model, loaded.vocabulary,
                        settings.resolved_for(loaded.sequence_length), batch_size)
        predictor.loaded = loaded
        return predictor

    def generate_ids(self, texts: Sequence[str]):
        """(tokens int32 [B, max_decode_length], scores float32 [B]) for one batch of texts."""
        import numpy as np

        texts = _as_texts(texts)
        if not texts:
            return np.zeros((0, self.settings.max_decode_length), "int32"), np.zeros((0,), "float32")
        from t5pre.models.decoding import compile_decoder

        ids, mask = self.preprocessor.encode_batch(texts)
        tokens, scores = compile_decoder(self.model, self.settings)(ids, mask)
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
            yield from zip(self.preprocessor.decode(tokens), (float(s) for s in scores))


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
