"""SentencePiece vocabulary in T5's id layout, usable from Python and inside tf.data.

T5 layout: ``pad=0``, ``eos=1``, ``unk=2``, no BOS. On top of the SentencePiece pieces sit
``extra_ids`` sentinels, ``<extra_id_0>`` being the *last* id (``vocab_size - 1``) and
``<extra_id_i>`` = ``vocab_size - 1 - i``. Span corruption writes these into inputs and targets.

Text with sentinels (what a user types for fill-in-the-blank) is encoded as Hugging Face's T5
tokenizer does, and decoded as seqio and SentencePiece do. Facts this rests on (checked with
transformers 5.x and 4.57, seqio's ``vocabularies.py``):

* seqio (and t5) append the sentinels to the SentencePiece model as user-defined pieces
  ``▁<extra_id_i>``, *with* the word-boundary mark. SentencePiece then matches one only at a
  word start: "the dog <extra_id_0> in" -> ``▁the ▁do g ▁<extra_id_0> ▁in``, but
  "dog<extra_id_0>in" spells the sentinel out in characters (``< extra _ id ...``), and so does
  the second of two adjacent sentinels (seqio documents the word-start limitation).
* Hugging Face's T5 tokenizer (transformers 5's ``T5Tokenizer``, 4.x's sentencepiece
  ``T5Tokenizer`` with ``legacy=True``, the default) splits every ``<extra_id_i>`` off the text
  first, drops the whitespace around it and encodes each piece of text between sentinels as a
  sentence of its own (with its dummy-prefix ``▁``): "dog<extra_id_0>in" ->
  ``▁do g <extra_id_0> ▁in``, "Hello <extra_id_0>." -> ``▁Hello <extra_id_0> ▁ .``. Where a
  sentinel stands between spaces or at either end of the text (how fill-in-the-blank prompts and
  T5's own examples are written) this gives exactly seqio's ids. (4.x's ``legacy=False`` drops the
  ``▁`` of the word after a sentinel even after a space, "... <extra_id_0> in" -> ``in``, and
  differs from both; it is not followed.)

So here: **encoding** is Hugging Face's rule: the text is cut at every ``<extra_id_i>`` with
``i < extra_ids`` (exactly that spelling: ``<extra_id_007>`` or ``<extra_id_100>`` with 100 extra
ids are plain text), each stretch of text between them is encoded by SentencePiece on its own (its
leading and trailing spaces vanish: T5's normaliser strips them) and each sentinel becomes its id.
Text without sentinels encodes exactly as before. **Decoding** is SentencePiece's over seqio's
model (sentinel pieces ``▁<extra_id_i>``): a sentinel reads as " <extra_id_i>", with a space before
it unless it starts the text: ``▁the ▁do g <extra_id_0> ▁in`` -> "the dog <extra_id_0> in", as
seqio and transformers 4.x's sentencepiece ``T5Tokenizer`` decode it (transformers 5 and the
``tokenizers``-based 4.x tokenizer write no space before a sentinel: "the dog<extra_id_0> in").
:meth:`encode` / :meth:`decode` (Python) and :meth:`encode_tf` / :meth:`decode_tf` (tensorflow-text,
used by tf.data and inside the exported SavedModel) give identical ids and strings, and so does
the ``tokenizer.json`` of the Hugging Face export (``t5pre.models.hf_export``).

Where the sentinels live. A vocabulary that only mapped sentinel ids "by hand" in Python could not
decode them inside ``tensorflow_text.SentencepieceTokenizer``, so the SentencePiece model that
both tokenizers load holds them as user-defined pieces ``▁<extra_id_i>`` at the top ids, in reverse
order (seqio's model, byte for byte, for a model file without sentinels such as real T5's
``spiece.model``: 32000 pieces, the 100 sentinels live only in the HF/seqio code). The model
*file* t5pre writes (:meth:`SentencePieceVocabulary.save`, :func:`train_vocabulary`, model
directories) keeps the pieces spelt ``<extra_id_i>`` as earlier t5pre wrote them, so older model
directories, data caches (keyed on :attr:`~SentencePieceVocabulary.serialized_model`) and older
t5pre releases all read the same file; a file holding either spelling is accepted and used with
the same ids.
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

# A sentinel piece as t5pre's model files spell it (``<extra_id_i>``) or as seqio's model does
# (``▁<extra_id_i>``); both are recognised in a model file.
_EXTRA_ID_RE = re.compile(r"^\u2581?<extra_id_(\d+)>$")
WORD_BOUNDARY = "\u2581"  # SentencePiece's "▁"


def extra_id_piece(i: int) -> str:
    """The text of sentinel ``i``: ``<extra_id_i>``."""
    return f"<extra_id_{i}>"


def sentinel_pattern(extra_ids: int) -> str:
    """A regular expression (Python ``re`` and RE2 alike) matching exactly the sentinel texts
    ``<extra_id_0>`` .. ``<extra_id_{extra_ids - 1}>``; "" when there are none."""
    return "|".join(extra_id_piece(i) for i in range(extra_ids))


def _with_sentinel_pieces(proto, extra_ids: int, prefix: str):
    """``proto`` (a copy) whose last ``extra_ids`` pieces are the sentinels spelt
    ``prefix + <extra_id_i>``, user-defined, ``<extra_id_0>`` last; appended when ``proto`` has no
    sentinels, renamed in place when it has them (in either spelling)."""
    pb = _model_proto_module()
    out = pb.ModelProto()
    out.CopyFrom(proto)
    size = len(out.pieces)
    has = bool(extra_ids) and _EXTRA_ID_RE.match(out.pieces[size - 1].piece) is not None
    for i in reversed(range(extra_ids)):
        piece = out.pieces[size - 1 - i] if has else out.pieces.add()
        piece.piece = prefix + extra_id_piece(i)
        piece.score = 0.0
        piece.type = pb.ModelProto.SentencePiece.USER_DEFINED
    return out


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
        if existing and existing != extra_ids:
            raise DataError(
                f"{origin}: the model already contains {existing} <extra_id_*> sentinels but "
                f"extra_ids={extra_ids} was asked for; pass extra_ids={existing}"
            )
        # The file form (what save() writes, spelt <extra_id_i>) and the form both tokenizers
        # load (seqio's, spelt ▁<extra_id_i>): see the module docstring.
        if existing and all(not p.piece.startswith(WORD_BOUNDARY) for p in proto.pieces[-existing:]):
            self._serialized = data  # t5pre's own file: its bytes as they are
        else:
            self._serialized = _with_sentinel_pieces(proto, extra_ids, "").SerializeToString()
        self._processor_model = _with_sentinel_pieces(proto, extra_ids, WORD_BOUNDARY).SerializeToString()
        self._extra_ids = extra_ids
        self._vocab_size = len(proto.pieces) + (0 if existing else extra_ids)
        self._num_base_pieces = self._vocab_size - extra_ids
        self._byte_fallback = bool(proto.trainer_spec.byte_fallback)
        pattern = sentinel_pattern(extra_ids)
        self._sentinel_pattern = pattern
        self._sentinel_re = re.compile(pattern) if pattern else None

        import sentencepiece as spm

        self._sp = spm.SentencePieceProcessor()
        try:
            self._sp.LoadFromSerializedProto(self._processor_model)
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
        """The SentencePiece model file's bytes, sentinels included and spelt ``<extra_id_i>``
        (what :meth:`save` writes; what identifies the vocabulary)."""
        return self._serialized

    @property
    def tokenizer_model(self) -> bytes:
        """The SentencePiece model both tokenizers load: sentinels spelt ``▁<extra_id_i>``, as
        seqio builds it (what the Hugging Face export writes as ``spiece.model``)."""
        return self._processor_model

    def sentinel(self, i: int) -> int:
        """Id of ``<extra_id_i>``: ``vocab_size - 1 - i``."""
        if not 0 <= i < self._extra_ids:
            raise DataError(f"sentinel {i} out of range: this vocabulary has {self._extra_ids} extra ids")
        return self._vocab_size - 1 - i

    def is_sentinel(self, token_id: int) -> bool:
        return self._vocab_size - self._extra_ids <= token_id < self._vocab_size

    def id_to_piece(self, token_id: int) -> str:
        """The piece of ``token_id``; ``<extra_id_i>`` for sentinel ``i``."""
        token_id = int(token_id)
        if self.is_sentinel(token_id):
            return extra_id_piece(self._vocab_size - 1 - token_id)
        return self._sp.IdToPiece(token_id)

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
        """Token ids of ``text`` (no EOS added). Each ``<extra_id_i>`` becomes its id and the
        text between sentinels is encoded on its own, as Hugging Face's T5 tokenizer does (see
        the module docstring)."""
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        if self._sentinel_re is None or "<extra_id_" not in text:
            return list(self._sp.EncodeAsIds(text))
        ids, start = [], 0
        for match in self._sentinel_re.finditer(text):
            ids.extend(self._sp.EncodeAsIds(text[start:match.start()]))
            ids.append(self._vocab_size - 1 - int(match.group()[len("<extra_id_"):-1]))
            start = match.end()
        ids.extend(self._sp.EncodeAsIds(text[start:]))
        return ids

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
        """The ``tensorflow_text.SentencepieceTokenizer`` over :attr:`tokenizer_model`.

        Its own ``tokenize`` does not split sentinels off: encode with :meth:`encode_tf`."""
        if self._tf_tokenizer is None:
            import tensorflow as tf
            import tensorflow_text as tf_text

            with tf.init_scope():  # the tokenizer's resource must outlive any tf.function
                tokenizer = tf_text.SentencepieceTokenizer(
                    model=self._processor_model, out_type=tf.int32, add_bos=False, add_eos=False
                )
                tokenizer._model_resource = _shared_model_resource(self._processor_model)
                self._tf_tokenizer = tokenizer
        return self._tf_tokenizer

    def encode_tf(self, text):
        """Tokenize inside TensorFlow, as :meth:`encode`: a scalar string -> int32 1-D; strings
        of rank r >= 1 -> int32 Ragged of rank r + 1."""
        import tensorflow as tf

        if self._sentinel_re is None:
            return self.tf_tokenizer.tokenize(text)
        text = tf.convert_to_tensor(text, tf.string)
        rank = text.shape.rank
        if rank is None:
            raise ValueError("encode_tf needs strings of known rank")
        ids = self._encode_flat_tf(tf.reshape(text, [-1]))
        if rank == 0:
            return ids[0]
        if rank > 1:
            dims = tf.shape(text, out_type=tf.int64)
            for axis in range(rank - 1, 0, -1):
                ids = tf.RaggedTensor.from_uniform_row_length(ids, dims[axis])
        return ids

    def _encode_flat_tf(self, texts):
        """1-D strings -> int32 Ragged [B, None]: every text cut into sentinels and the stretches
        between them (tensorflow-text's RE2 regex split, the pattern of :meth:`encode`); the
        stretches are tokenized, the sentinels looked up, and each row joined back in order."""
        import tensorflow as tf
        import tensorflow_text as tf_text

        pattern = self._sentinel_pattern
        parts = tf_text.regex_split(texts, pattern, keep_delim_regex_pattern=pattern)  # [B, P]
        flat = parts.flat_values
        is_sentinel = tf.strings.regex_full_match(flat, pattern)
        pieces = self.tf_tokenizer.tokenize(tf.where(is_sentinel, "", flat))  # [P, None]
        number = tf.strings.to_number(
            tf.strings.regex_replace(tf.boolean_mask(flat, is_sentinel), "[^0-9]", ""), tf.int32)
        sentinels = tf.RaggedTensor.from_row_lengths(
            self._vocab_size - 1 - number, tf.cast(is_sentinel, pieces.row_splits.dtype))
        per_part = tf.concat([pieces, sentinels], axis=1)  # a part is text or one sentinel
        return parts.with_flat_values(per_part).merge_dims(1, 2)

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
