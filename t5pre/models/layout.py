"""The model directory's file names: the one place that spells them (no heavy imports).

    DIR/config.yaml           RUN_CONFIG_FILE       the resolved run config (training directories)
    DIR/model_config.json     MODEL_CONFIG_FILE     T5Config fields + FORMAT_VERSION
    DIR/model.weights.h5      WEIGHTS_FILE          Keras weights (save_pretrained, best/)
    DIR/spiece.model          VOCABULARY_FILE       SentencePiece model, sentinels included
    DIR/vocab.json            VOCABULARY_INFO_FILE  its metadata (extra_ids, vocab_size)
    DIR/checkpoints/          CHECKPOINTS_DIR       checkpoints + their CHECKPOINT_STATE_FILE
    DIR/logs/                 LOGS_DIR              TensorBoard (train/, eval/), logged_steps.json
    DIR/.lock                 LOCK_FILE             the writer's lock (t5pre.models.dir_lock)
    DIR/finetune.json         FINETUNE_INFO_FILE    what fine-tuning recorded (task, lengths, ...)
    DIR/best/                 BEST_DIR              fine-tuning's best model (pretrained layout)
    DIR/best/best.json        BEST_INFO_FILE        its task, lengths, step and scores

The vocabulary's two names belong to :mod:`t5pre.data.vocabulary` (which writes them, below this
layer) and are the same objects here. Every module that reads or writes a model directory takes
the names from here.
"""

from t5pre.data.vocabulary import SPM_MODEL_FILE as VOCABULARY_FILE
from t5pre.data.vocabulary import VOCAB_METADATA_FILE as VOCABULARY_INFO_FILE

RUN_CONFIG_FILE = "config.yaml"
MODEL_CONFIG_FILE = "model_config.json"
#: The `format_version` field of model_config.json.
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.weights.h5"
CHECKPOINTS_DIR = "checkpoints"
#: The checkpoint state file in CHECKPOINTS_DIR (TensorFlow's text format, both formats).
CHECKPOINT_STATE_FILE = "checkpoint"
LOGS_DIR = "logs"
LOCK_FILE = ".lock"
FINETUNE_INFO_FILE = "finetune.json"
BEST_DIR = "best"
BEST_INFO_FILE = "best.json"

__all__ = ["RUN_CONFIG_FILE", "MODEL_CONFIG_FILE", "FORMAT_VERSION", "WEIGHTS_FILE",
           "VOCABULARY_FILE", "VOCABULARY_INFO_FILE", "CHECKPOINTS_DIR", "CHECKPOINT_STATE_FILE",
           "LOGS_DIR", "LOCK_FILE", "FINETUNE_INFO_FILE", "BEST_DIR", "BEST_INFO_FILE"]
