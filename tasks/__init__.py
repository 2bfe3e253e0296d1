"""The registered task catalogue, installed as ``t5pre.tasks``.

Importing this package registers every task and mixture below with ``t5pre.TaskRegistry`` /
``t5pre.MixtureRegistry``; ``t5pre.get_task`` imports it on first use.

* ``pretraining``    denoising objectives over the embedded default corpus, user text files, C4
* ``summarization``  cnn_dailymail, xsum (TFDS) and their local-file twins; the embedded demo task
* ``qa``             squad_v1.1 (TFDS) and its SQuAD-JSON twin; the embedded demo task
* ``files``          (imported on use) the task a run config's ``data.files`` describes
  (``t5pre pretrain --files``, ``t5pre finetune --train-files``)
"""

from t5pre.tasks import pretraining, qa, summarization  # noqa: F401  (registration side effects)
