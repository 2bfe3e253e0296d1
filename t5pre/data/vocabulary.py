"""SentencePiece vocabulary in T5's id layout, usable from Python and inside tf.data.

T5 layout: ``pad=0``, ``eos=1``, ``unk=2``, no BOS. On top of the SentencePiece pieces sit
``extra_ids`` sentinels, ``<extra_id_0>`` being the *last* id (``vocab_size - 1``) and
``<extra_id_i>`` = ``vocab_size - 1 - i``. Span corruption writes these into inputs and targets.

Why the sentinels are written into the SentencePiece model itself: a vocabulary that only maps
sentinel ids "by hand" in Python cannot be used by ``tensorflow_text.SentencepieceTokenizer`` (the
tokenizer inside tf.data and inside an exported SavedModel), and decoding ``<extra_id_3>`` would
produce garbage in one of the two worlds. So when the model file lacks ``<extra_id_*>`` pieces
(real T5's ``spiece.model`` does: 32000 pieces, the 100 sentinels live only in the HF/seqio code),
they are appended to the model proto in memory as *user-defined* pieces, in reverse order so that
``<extra_id_0>`` lands on the last id. Both tokenizers then encode the literal text ``<extra_id_3>``
to its id and decode the id back to that text. A model that already contains the sentinels (e.g.
one saved by :meth:`SentencePieceVocabulary.save`) is used as is.
"""

from __future__ import annotations

import json
import os
import re
from typing import Iterable, Sequence

from t5pre.errors import DataError
from t5pre.files import atomic_write_bytes

PAD_ID = 0
EOS_ID = 1
UNK_ID = 2
DEFAULT_EXTRA_IDS = 100

VOCAB_METADATA_FILE = "vocab.json"
SPM_MODEL_FILE = "spiece.model"

_EXTRA_ID_RE = re.compile(r"^<extra_id_(\d+)>$")


def extra_id_piece(i: int) -> str:
    """The text of sentinel ``i``: ``<extra_id_i>``."""
    return f"<extra_id_{i}>"


def _model_proto_module():
    from sentencepiece import sentencepiece_model_pb2

    return sentencepiece_model_pb2


def _parse_model(data: bytes, origin: str):
    pb = _model_proto_module()
    proto = pb.ModelProto()
    try:
        proto.ParseFromString(data)
    except Exception as e:  # protobuf's DecodeError and friends
        raise DataError(f"{origin}: not a SentencePiece model file ({e})") from None
    if not proto.pieces:
        raise DataError(f"{origin}: not a SentencePiece model file (it has no pieces)")
    return proto


class SentencePieceVocabulary:
    """A SentencePiece model in T5's id layout, with ``extra_ids`` sentinels at the top.

    Args:
      path_or_bytes: path of a ``.model`` file, or the serialized model bytes.
      extra_ids: number of sentinels. When the model file already holds ``<extra_id_*>`` pieces
        (it was saved by :meth:`save` or trained by :func:`train_vocabulary`), their number must
        equal ``extra_ids``; otherwise that many sentinels are appended in memory.

    Raises:
      DataError: the file is missing or not a SentencePiece model, its special ids are not T5's
        (pad 0, eos 1, unk 2), or its sentinels are not laid out as ``vocab_size - 1 - i``.
    """

    def __init__(self, path_or_bytes, extra_ids: int = DEFAULT_EXTRA_IDS):
        if isinstance(path_or_bytes, (bytes, bytearray)):
            data, origin, self.path = bytes(path_or_bytes), "<SentencePiece model bytes>", None
        else:
            path = os.fspath(path_or_bytes)
            origin, self.path = path, path
            data = _read_model_file(path)
        if extra_ids < 0:
            raise DataError(f"{origin}: extra_ids must be >= 0, got {extra_ids}")
        proto = _parse_model(data, origin)
        self._origin = origin
        self._check_special_ids(proto, origin)
        existing = self._existing_sentinels(proto, origin)
        if existing:
            if existing != extra_ids:
                raise DataError(
                    f"{origin}: the model already contains {existing} <extra_id_*> sentinels but "
                    f"extra_ids={extra_ids} was asked for; pass extra_ids={existing}"
                )
            self._serialized = data
        else:
            pb = _model_proto_module()
            for i in reversed(range(extra_ids)):
                piece = proto.pieces.add()
                piece.piece = extra_id_piece(i)
                piece.score = 0.0
                piece.type = pb.ModelProto.SentencePiece.USER_DEFINED
            self._serialized = proto.SerializeToString()
        self._extra_ids = extra_ids
        self._vocab_size = len(proto.pieces)
        self._num_base_pieces = self._vocab_size - extra_ids
        self._byte_fallback = bool(proto.trainer_spec.byte_fallback)

        import sentencepiece as spm

        self._sp = spm.SentencePieceProcessor()
        try:
            self._sp.LoadFromSerializedProto(self._serialized)
        except Exception as e:
            raise DataError(f"{origin}: SentencePiece could not load the model ({e})") from None
        self._tf_tokenizer = None

    # ----------------------------------------------------------------------------- validation
    @staticmethod
    def _check_special_ids(proto, origin):
        spec = proto.trainer_spec
        pb = _model_proto_module()
        want = {"pad": (spec.pad_id, PAD_ID), "eos": (spec.eos_id, EOS_ID), "unk": (spec.unk_id, UNK_ID)}
        wrong = [f"{k}_id={got} (want {exp})" for k, (got, exp) in want.items() if got != exp]
        if spec.bos_id >= 0:
            wrong.append(f"bos_id={spec.bos_id} (want -1: T5 has no BOS)")
        if wrong:
            raise DataError(
                f"{origin}: not in T5's id layout: {', '.join(wrong)}. Train it with "
                "`t5pre vocab train` (or sentencepiece with pad_id=0 eos_id=1 unk_id=2 bos_id=-1)"
            )
        kinds = [proto.pieces[i].type for i in range(3)]
        if kinds[2] != pb.ModelProto.SentencePiece.UNKNOWN:
            raise DataError(f"{origin}: piece 2 is not the <unk> piece")

    @staticmethod
    def _existing_sentinels(proto, origin) -> int:
        found = {}
        for index, piece in enumerate(proto.pieces):
            m = _EXTRA_ID_RE.match(piece.piece)
            if m:
                found[int(m.group(1))] = index
        if not found:
            return 0
        n, size = len(found), len(proto.pieces)
        bad = [i for i, index in found.items() if index != size - 1 - i]
        if bad or sorted(found) != list(range(n)):
            i = (bad or [max(found)])[0]
            raise DataError(
                f"{origin}: <extra_id_{i}> is at id {found[i]}, but T5 layout needs "
                f"<extra_id_i> at vocab_size - 1 - i ({size - 1 - i}) for i in 0..{n - 1}"
            )
        return n

    # ------------------------------------------------------------------------------ properties
    @property
    def vocab_size(self) -> int:
        """Number of ids, sentinels included (what the model's embedding must cover)."""
        return self._vocab_size

    @property
    def num_base_pieces(self) -> int:
        """SentencePiece pieces without the sentinels (32000 for T5)."""
        return self._num_base_pieces

    @property
    def extra_ids(self) -> int:
        return self._extra_ids

    pad_id = PAD_ID
    eos_id = EOS_ID
    unk_id = UNK_ID

    @property
    def serialized_model(self) -> bytes:
        """The SentencePiece model bytes, sentinels included (what export and save embed)."""
        return self._serialized

    def sentinel(self, i: int) -> int:
        """Id of ``<extra_id_i>``: ``vocab_size - 1 - i``."""
        if not 0 <= i < self._extra_ids:
            raise DataError(f"sentinel {i} out of range: this vocabulary has {self._extra_ids} extra ids")
        return self._vocab_size - 1 - i

    def is_sentinel(self, token_id: int) -> bool:
        return self._vocab_size - self._extra_ids <= token_id < self._vocab_size

    def id_to_piece(self, token_id: int) -> str:
        return self._sp.IdToPiece(int(token_id))

    def __repr__(self):
        return (
            f"SentencePieceVocabulary({self._origin!r}, vocab_size={self._vocab_size}, "
            f"extra_ids={self._extra_ids})"
        )

    def __eq__(self, other):
        return (
            isinstance(other, SentencePieceVocabulary)
            and self._serialized == other._serialized
            and self._extra_ids == other._extra_ids
        )

    def __hash__(self):
        return hash((self._vocab_size, self._extra_ids, len(self._serialized)))

    # ------------------------------------------------------------------------- python encode
    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (no EOS added). Sentinel text ``<extra_id_i>`` maps to its id."""
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        return list(self._sp.EncodeAsIds(text))

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``: stops at the first EOS, drops padding; ids beyond the vocabulary
        (a model's embedding is often padded, e.g. 32128 rows for 32100 ids) decode as unk."""
        clean = []
        for token in ids:
            token = int(token)
            if token == EOS_ID:
                break
            if token == PAD_ID:
                continue
            if token < 0 or token >= self._vocab_size:
                token = UNK_ID
            clean.append(token)
        return self._sp.DecodeIds(clean)

    # ----------------------------------------------------------------------------- tf encode
    @property
    def tf_tokenizer(self):
        """The ``tensorflow_text.SentencepieceTokenizer`` over :attr:`serialized_model`."""
        if self._tf_tokenizer is None:
            import tensorflow as tf
            import tensorflow_text as tf_text

            with tf.init_scope():  # the tokenizer's resource must outlive any tf.function
                tokenizer = tf_text.SentencepieceTokenizer(
                    model=self._serialized, out_type=tf.int32, add_bos=False, add_eos=False
                )
                tokenizer._model_resource = _shared_model_resource(self._serialized)
                self._tf_tokenizer = tokenizer
        return self._tf_tokenizer

    def encode_tf(self, text):
        """Tokenize inside TensorFlow: scalar string -> int32 1-D; 1-D strings -> int32 Ragged."""
        return self.tf_tokenizer.tokenize(text)

    def decode_tf(self, ids):
        """Detokenize inside TensorFlow: 1-D ids -> scalar string; 2-D (dense or ragged) ->
        1-D strings. Stops at the first EOS and drops padding, like :meth:`decode`."""
        import tensorflow as tf

        ids = tf.cast(ids, tf.int32)
        scalar = ids.shape.rank == 1
        if scalar:
            ids = ids[tf.newaxis]
        if not isinstance(ids, tf.RaggedTensor):
            ids = tf.RaggedTensor.from_tensor(ids)
        before_eos = tf.math.cumsum(tf.cast(tf.equal(ids, EOS_ID), tf.int32), axis=1) == 0
        ids = tf.ragged.boolean_mask(ids, tf.logical_and(before_eos, tf.not_equal(ids, PAD_ID)))
        out_of_range = tf.logical_or(ids < 0, ids >= self._vocab_size)
        ids = tf.where(out_of_range, tf.ones_like(ids) * UNK_ID, ids)
        text = self.tf_tokenizer.detokenize(ids)
        return text[0] if scalar else text

    # -------------------------------------------------------------------------- persistence
    def metadata(self) -> dict:
        return {
            "type": "sentencepiece",
            "vocab_size": self._vocab_size,
            "extra_ids": self._extra_ids,
            "num_base_pieces": self._num_base_pieces,
            "pad_id": PAD_ID,
            "eos_id": EOS_ID,
            "unk_id": UNK_ID,
        }

    def save(self, path) -> str:
        """Save the model (sentinels included) and its metadata.

        ``path`` is a directory (writes ``spiece.model`` and ``vocab.json`` in it, the model-dir
        layout) or a file name ending in ``.model`` (writes it and ``vocab.json`` beside it).
        Both files are written atomically. Returns the path of the ``.model`` file.
        """
        path = os.fspath(path)
        if path.endswith(".model"):
            model_path = path
            meta_path = os.path.join(os.path.dirname(os.path.abspath(path)), VOCAB_METADATA_FILE)
        else:
            model_path = os.path.join(path, SPM_MODEL_FILE)
            meta_path = os.path.join(path, VOCAB_METADATA_FILE)
        atomic_write_bytes(model_path, self._serialized)
        atomic_write_bytes(meta_path, (json.dumps(self.metadata(), indent=2) + "\n").encode())
        return model_path

    @classmethod
    def load(cls, directory) -> "SentencePieceVocabulary":
        """Restore the exact vocabulary saved by :meth:`save` into ``directory``."""
        return load_vocabulary(directory)


def _read_model_file(path: str) -> bytes:
    if not path:
        raise DataError("no SentencePiece model path given")
    if "://" in path:  # gs://, hdfs://...: TensorFlow's gfile reads them
        import tensorflow as tf

        try:
            with tf.io.gfile.GFile(path, "rb") as f:
                return f.read()
        except tf.errors.OpError as e:
            raise DataError(f"{path}: cannot read the SentencePiece model ({e.message})") from None
    if not os.path.exists(path):
        raise DataError(f"{path}: SentencePiece model file not found")
    if os.path.isdir(path):
        raise DataError(f"{path}: is a directory, not a SentencePiece model file")
    with open(path, "rb") as f:
        return f.read()


def load_vocabulary(directory) -> SentencePieceVocabulary:
    """Load ``directory/spiece.model`` with the extra ids recorded in ``directory/vocab.json``.

    Checks that the restored vocabulary has the recorded ``vocab_size``.
    """
    directory = os.fspath(directory)
    model_path = os.path.join(directory, SPM_MODEL_FILE)
    meta_path = os.path.join(directory, VOCAB_METADATA_FILE)
    meta = read_vocab_metadata(meta_path) if os.path.exists(meta_path) else {}
    extra_ids = int(meta.get("extra_ids", DEFAULT_EXTRA_IDS))
    vocab = SentencePieceVocabulary(model_path, extra_ids=extra_ids)
    if "vocab_size" in meta and int(meta["vocab_size"]) != vocab.vocab_size:
        raise DataError(
            f"{meta_path}: records vocab_size={meta['vocab_size']} but {model_path} gives "
            f"{vocab.vocab_size} with extra_ids={extra_ids}"
        )
    return vocab


def read_vocab_metadata(path) -> dict:
    """Parse a ``vocab.json`` file (DataError naming the file when it is not valid JSON)."""
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
    except FileNotFoundError:
        raise DataError(f"{path}: vocabulary metadata file not found") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(meta, dict):
        raise DataError(f"{path}: expected a JSON object with extra_ids and vocab_size")
    return meta


# ---------------------------------------------------------------------------------- training
def train_vocabulary(
    texts: Iterable[str],
    model_prefix,
    *,
    vocab_size: int,
    extra_ids: int = DEFAULT_EXTRA_IDS,
    max_sentences: int | None = None,
    character_coverage: float = 0.9995,
    byte_fallback: bool = True,
    model_type: str = "unigram",
    num_threads: int | None = None,
    seed_sentencepiece_size: int = 1_000_000,
    extra_options: dict | None = None,
) -> SentencePieceVocabulary:
    """Train a SentencePiece model in T5's layout and write ``{model_prefix}.model`` atomically.

    ``vocab_size`` is the *total* size including the ``extra_ids`` sentinels, so
    ``vocab_size=32100, extra_ids=100`` trains 32000 pieces, like T5. The written file contains
    the sentinels (as user-defined pieces at the top), so it is self-describing: plain
    ``sentencepiece`` and ``tensorflow_text`` see them too. ``byte_fallback`` (on by default)
    spells any character outside the learnt pieces as UTF-8 byte pieces instead of ``<unk>``.

    ``texts`` yields documents; each is split on newlines into SentencePiece "sentences" (empty
    lines dropped). ``max_sentences`` caps how many are used (SentencePiece samples them evenly).
    """
    import sentencepiece as spm

    pieces = vocab_size - extra_ids
    if extra_ids < 0:
        raise DataError(f"extra_ids must be >= 0, got {extra_ids}")
    if pieces < 8:
        raise DataError(
            f"vocab_size={vocab_size} with extra_ids={extra_ids} leaves {pieces} SentencePiece "
            "pieces; vocab_size counts the extra ids too (e.g. 32100 = 32000 pieces + 100)"
        )
    if byte_fallback and pieces < 3 + 256 + 8:
        raise DataError(f"byte_fallback needs room for 256 byte pieces: vocab_size - extra_ids = {pieces} is too small")

    # SentencePiece runs this iterator from C++ and turns whatever it raises into a RuntimeError
    # whose message carries a Python traceback; a DataError raised while reading the text (e.g.
    # "file:line: malformed JSON") is kept aside here and re-raised as itself after training.
    failures: list = []

    def sentences():
        count = 0
        try:
            for doc in texts:
                if isinstance(doc, bytes):
                    doc = doc.decode("utf-8", errors="replace")
                for line in doc.split("\n"):
                    line = line.strip()
                    if line:
                        count += 1
                        yield line
        except DataError as e:
            failures.append(e)
            return
        if count == 0:
            failures.append(DataError("no text to train the vocabulary on (every document was empty)"))

    options = dict(
        model_type=model_type,
        vocab_size=pieces,
        pad_id=PAD_ID,
        eos_id=EOS_ID,
        unk_id=UNK_ID,
        bos_id=-1,
        pad_piece="<pad>",
        eos_piece="</s>",
        unk_piece="<unk>",
        character_coverage=character_coverage,
        byte_fallback=byte_fallback,
        num_threads=num_threads or max(1, os.cpu_count() or 1),
        seed_sentencepiece_size=seed_sentencepiece_size,
        max_sentence_length=8192,
        minloglevel=1,  # SentencePiece's per-piece INFO lines would drown the CLI output
    )
    if max_sentences:
        options.update(input_sentence_size=int(max_sentences), shuffle_input_sentence=True)
    options.update(extra_options or {})
    import io

    buffer = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(sentence_iterator=sentences(), model_writer=buffer, **options)
    except RuntimeError as e:
        if failures:
            raise failures[0] from None
        raise _training_error(e, vocab_size, extra_ids) from None
    if failures:
        raise failures[0]
    vocab = SentencePieceVocabulary(buffer.getvalue(), extra_ids=extra_ids)
    model_path = os.fspath(model_prefix) + ".model"
    atomic_write_bytes(model_path, vocab.serialized_model)
    return SentencePieceVocabulary(model_path, extra_ids=extra_ids)


def _training_error(error: RuntimeError, vocab_size: int, extra_ids: int) -> DataError:
    """A SentencePiece training failure in the user's terms (total vocab_size, extra ids
    included), not SentencePiece's piece counts."""
    message = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
    too_high = re.search(r"Vocabulary size too high \((\d+)\).*<= (\d+)", message)
    if too_high:
        most = int(too_high.group(2))
        return DataError(
            f"vocab_size {vocab_size} is too large for this text: SentencePiece can learn at most "
            f"{most} pieces from it, i.e. vocab_size <= {most + extra_ids} with {extra_ids} extra "
            "ids; give it more text or a smaller vocab_size")
    return DataError(f"SentencePiece training failed: {message}")


# ---------------------------------------------------------------------------- shipped default
DEFAULT_VOCABULARY_FILE = "default_spiece.model"
_default_vocabulary = None


def _shared_model_resource(serialized: bytes):
    """A SentencePiece model resource owned by TensorFlow's resource manager, not by a kernel.

    tensorflow-text creates its model resource *private to the op kernel* (its own TODO notes
    it), and TensorFlow deletes such resources whenever it clears its kernel cache, which
    ``tf.random.set_seed`` / ``keras.utils.set_random_seed`` do. A tokenizer cached on a
    vocabulary would then fail in the next tf.data pipeline with "Resource ... SentencepieceOp
    ... does not exist". Giving the resource a ``shared_name`` (derived from the model bytes, so
    equal models share one resource) makes the resource manager own it instead.
    """
    import hashlib

    from tensorflow_text.python.ops import sentencepiece_tokenizer as sp_ops

    shared_name = "t5pre_spm_" + hashlib.sha1(serialized).hexdigest()[:20]

    class _SharedModelResource(sp_ops._SentencepieceModelResource):
        def _create_resource(self):
            return sp_ops.gen_sentencepiece_tokenizer.sentencepiece_op(
                model=self._model, shared_name=shared_name)

    return _SharedModelResource(serialized, None)


def default_vocabulary_path() -> str:
    return os.path.join(os.path.dirname(os.path.dirname(__file__)), "assets", DEFAULT_VOCABULARY_FILE)


def default_vocabulary() -> SentencePieceVocabulary:
    """The vocabulary shipped in ``t5pre/assets/``: 4000 unigram pieces trained on the embedded
    default corpus (Python docstrings) + 100 sentinels = ``vocab_size`` 4100. Cached."""
    global _default_vocabulary
    if _default_vocabulary is None:
        _default_vocabulary = SentencePieceVocabulary(default_vocabulary_path(), extra_ids=DEFAULT_EXTRA_IDS)
    return _default_vocabulary


def sentinel_ids(vocabulary: SentencePieceVocabulary, n: int) -> Sequence[int]:
    """The first ``n`` sentinel ids, ``<extra_id_0>`` first (refuses to run into real tokens)."""
    return [vocabulary.sentinel(i) for i in range(n)]
