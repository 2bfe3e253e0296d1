"""Fine-tuning: the one :class:`~t5pre.training.trainer.Trainer`, started from a pretrained model,
with decoded evaluation and a best-checkpoint keeper as its actions.

This module composes the layers below it and adds no loop of its own:

* **A starting point** (:func:`t5pre.models.store.resolve_init` / ``read_init``): a t5pre
  training model directory (its latest checkpoint, or ``DIR@ckpt-N``), a ``save_pretrained``
  directory (``model.weights.h5``) or a Hugging Face T5 directory. The architecture is the init
  model's; only ``dropout_rate`` may change (fine-tuning default 0.1, the T5 convention; 0 in
  pretraining). Weights are loaded only when the run starts; a re-run resumes from
  ``OUT/checkpoints``.
* **One vocabulary.** The model's vocabulary must be the task's: token ids of another vocabulary
  would be trained on silently. A mismatch is a CheckpointError unless
  ``finetune.use_model_vocabulary`` re-tokenises the task's text with the model's vocabulary.
* **Actions** (:mod:`t5pre.training.actions`): every ``training.eval_every`` steps
  :class:`~t5pre.evaluation.periodic.DecodeEvaluation` decodes the first
  ``finetune.eval_examples`` validation examples (greedy unless ``finetune.beam``) and scores
  them with the task's metric_fns (TensorBoard: ``OUT/logs/eval``), and
  :class:`~t5pre.training.actions.BestCheckpoint` keeps the checkpoint with the best
  ``finetune.metric`` (default: the task's main score, e.g. ROUGE-Lsum or SQuAD F1) in
  ``OUT/best/`` (the ``save_pretrained`` layout plus ``best.json``), swapped in atomically.

A fine-tune config is a run config (one schema, :mod:`t5pre.training.config`) read by
``load_finetune_config``: fine-tuning defaults and the ``finetune:`` section.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from typing import Callable, Optional

from t5pre.errors import ConfigError
from t5pre.models.layout import FINETUNE_INFO_FILE
from t5pre.training.config import CHANGEABLE_MODEL_FIELDS


@dataclasses.dataclass
class FinetuneResult:
    train: object  # TrainResult
    best_metric: Optional[str]
    best_score: Optional[float]
    best_step: Optional[int]
    eval_history: list  # (step, scores) of every decoded evaluation
    task: object


def _model_fn_for(model_config):
    def model_fn(run_config, vocabulary):
        from t5pre.models import T5Model

        config = model_config
        if vocabulary is not None:
            config = config.resolve_vocab_size(vocabulary)
        return T5Model(config)

    return model_fn


def _architecture(run_config, init, model_config=None):
    """The fine-tuning model's T5Config: the init model's (or ``model_config``, or the run
    config's size) with the changeable fields of ``model.overrides`` applied."""
    from t5pre.models import T5Config

    base = init.config if init is not None else model_config
    if base is None:
        base = T5Config.from_name(run_config.model.name)
    values = base.to_dict()
    values.update({k: v for k, v in run_config.model.overrides.items()
                   if k in CHANGEABLE_MODEL_FIELDS})
    return T5Config.from_dict(values, source="fine-tuning model")


def _record_architecture(run_config, model_config, init):
    """Writes the architecture into the run config (``model.name`` + full ``overrides``), so the
    model directory's config.yaml alone rebuilds the fine-tuned model."""
    from t5pre.models import available_sizes

    values = model_config.to_dict()
    name = values.pop("name", None)
    run_config.model.name = name if name in available_sizes() else "tiny"
    run_config.model.overrides = values
    run_config.model.init_from = init.source.spec if init is not None else None
    return run_config


def _files_task(run_config, init_model):
    """The task of ``data.files`` (JSON Lines fields or SQuAD JSON), over the init model's
    vocabulary unless ``data.vocabulary`` names one."""
    from t5pre.tasks.files import files_task
    from t5pre.training.config import files_kind

    if files_kind(run_config.data) == "pretraining":
        raise ConfigError("fine-tuning on data.files needs an input and a target: "
                          "--input-field and --target-field (data.input_field / "
                          "target_field, JSON Lines) or --format squad (SQuAD JSON)")
    vocabulary = init_model.vocabulary if init_model is not None else None
    return files_task(run_config.data, vocabulary)


def finetune(run_config, model_dir: str, *, init=None, model_config=None, strategy=None,
             backend=None, task=None, log: Optional[Callable] = None,
             modules=()) -> FinetuneResult:
    """Fine-tunes on ``run_config.data.task`` into ``model_dir``; see the module docstring.

    ``init`` (an ``InitSource`` from :func:`t5pre.models.store.resolve_init`) None trains from
    random initialisation (the baseline of benchmarks/transfer.py), with the architecture of
    ``model_config`` (a T5Config) or of ``run_config.model.name``. ``modules`` (the ``--module``
    values that registered the task) are recorded in finetune.json / best.json, so that
    evaluate finds the task again.
    """
    from t5pre.data.registry import get_downstream_task
    from t5pre.data.task_vocabulary import check_vocabulary, task_with_vocabulary
    from t5pre.evaluation.evaluate import TaskEvaluator
    from t5pre.evaluation.periodic import DecodeEvaluation
    from t5pre.files import atomic_write_json
    from t5pre.models.store import read_init
    from t5pre.training import summaries
    from t5pre.training.actions import BestCheckpoint
    from t5pre.training.trainer import Trainer

    settings = run_config.finetune
    log = log or summaries.console
    run_config = copy.deepcopy(run_config)
    if run_config.data.mixture and task is None:
        raise ConfigError("fine-tuning trains and evaluates one task: set data.task (--task), "
                          f"not data.mixture ({run_config.data.mixture!r})")
    init_model = read_init(init) if init is not None else None
    if task is None and run_config.data.files:
        task = _files_task(run_config, init_model)
    task = task or get_downstream_task(run_config.data.task)
    if init_model is not None:
        task = check_vocabulary(init_model.vocabulary, task, f"--init-from {init.spec}",
                                use_model_vocabulary=settings.use_model_vocabulary)
    vocabulary = (init_model.vocabulary if init_model is not None
                  and init_model.vocabulary is not None else task.vocabulary)
    if vocabulary is not task.vocabulary:
        task = task_with_vocabulary(task, vocabulary)
    config = _architecture(run_config, init_model, model_config).resolve_vocab_size(vocabulary)
    _record_architecture(run_config, config, init_model)

    lengths = run_config.data.sequence_length
    sequence_length = {"inputs": lengths.inputs, "targets": lengths.targets}
    # Everything evaluate / predict need to score this model again without flags.
    info = {"task": task.name, "split": run_config.data.eval_split,
            "sequence_length": sequence_length,
            "init_from": init.spec if init is not None else None,
            "eval_examples": settings.eval_examples, "modules": list(modules),
            "use_model_vocabulary": bool(settings.use_model_vocabulary),
            "data": run_config.data.files_spec()}
    actions = []
    decode = None
    if (run_config.data.eval_split and run_config.training.eval_every and task.metric_fns
            and run_config.data.eval_split in task.splits):
        decode = DecodeEvaluation(TaskEvaluator(
            task, vocabulary, split=run_config.data.eval_split, sequence_length=sequence_length,
            max_examples=settings.eval_examples, settings=settings.decode_settings(lengths),
            batch_size=settings.eval_batch_size, metric=settings.metric))
        actions.append(decode)
    trainer = Trainer(run_config, model_dir, backend=backend, strategy=strategy, task=task,
                      model_fn=_model_fn_for(config), vocabulary=vocabulary, init=init_model,
                      actions=actions, log=log)
    best = BestCheckpoint(model_dir, settings.metric, info=info, enabled=trainer.is_chief,
                          log=log)
    trainer.actions.insert(actions.index(decode) + 1 if decode else 0, best)
    if trainer.is_chief:
        os.makedirs(model_dir, exist_ok=True)
        atomic_write_json(os.path.join(model_dir, FINETUNE_INFO_FILE),
                          {**info, "settings": dataclasses.asdict(settings),
                           "init": init.describe() if init is not None else "random"})
    if init_model is not None:
        log(f"fine-tuning from {init.describe()} on task {task.name!r}")
    else:
        log("no init model: training from random initialisation")
    result = trainer.train()
    return FinetuneResult(result, best.metric, best.best_score, best.best_step,
                          decode.history if decode else [], task)
