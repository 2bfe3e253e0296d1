"""Choosing the tf.distribute strategy: ``auto | one_device | mirrored | multi_worker | tpu``.

``auto`` picks TPUStrategy when a TPU address is given, MultiWorkerMirroredStrategy when
``TF_CONFIG`` names more than one worker, MirroredStrategy when more than one GPU is visible,
and OneDeviceStrategy (first GPU, else CPU) otherwise.

MultiWorkerMirroredStrategy must be created before any other TensorFlow op runs in the process
(TF's rule), so the CLI creates the strategy first thing.

Where the multi-worker cluster comes from (``strategy.cluster``): ``tf_config`` (default) reads
``TF_CONFIG``; ``slurm`` reads the Slurm step that ``srun`` started (``SLURM_PROCID``,
``SLURM_STEP_NUM_TASKS``, ``SLURM_STEP_NODELIST``, ``SLURM_STEP_TASKS_PER_NODE``) through
``tf.distribute.cluster_resolver.SlurmClusterResolver``: one worker per task, task ``i`` at
``host:strategy.port_base + its index on the node``; with GPUs, the resolver splits each node's
GPUs evenly over its tasks (``CUDA_VISIBLE_DEVICES``). Under ``slurm``, ``auto`` picks
multi_worker when the step has more than one task.

Which worker writes what: only the *chief* (task type ``chief``, or ``worker`` 0 when the cluster
has no chief) writes checkpoints, TensorBoard logs and the model-directory files; every worker
still takes part in the checkpoint save (see ``t5pre/models/checkpoints.py``).
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass

from t5pre.errors import ConfigError


from t5pre.lazy import tensorflow as _tf  # noqa: E402


def _tf_config() -> dict:
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return {}
    try:
        cfg = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ConfigError(f"TF_CONFIG is not valid JSON: {e}") from None
    if not isinstance(cfg, dict):
        raise ConfigError("TF_CONFIG must be a JSON object with 'cluster' and 'task'")
    return cfg


def _num_tf_config_workers(cfg: dict) -> int:
    cluster = cfg.get("cluster") or {}
    return sum(len(cluster.get(k) or []) for k in ("chief", "worker"))


CLUSTERS = ("tf_config", "slurm")
SLURM_VARIABLES = ("SLURM_PROCID", "SLURM_STEP_NUM_TASKS", "SLURM_STEP_NODELIST",
                   "SLURM_STEP_TASKS_PER_NODE")


def _num_slurm_tasks() -> int:
    try:
        return int(os.environ.get("SLURM_STEP_NUM_TASKS", "0"))
    except ValueError:
        raise ConfigError("SLURM_STEP_NUM_TASKS is not a number: "
                          f"{os.environ['SLURM_STEP_NUM_TASKS']!r}") from None


def _visible_gpus() -> int:
    """GPUs on this node as Slurm's resolver counts them, without initialising TensorFlow's
    devices (the resolver must set CUDA_VISIBLE_DEVICES first): CUDA_VISIBLE_DEVICES, else
    nvidia-smi, else none."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip()])
    try:
        out = subprocess.run(["nvidia-smi", "--list-gpus"], capture_output=True, text=True,
                             timeout=60)
    except (OSError, subprocess.SubprocessError):
        return 0
    return len(out.stdout.strip().splitlines()) if out.returncode == 0 else 0


def slurm_cluster_resolver(port_base: int = 8888):
    """`SlurmClusterResolver` for the current srun step (ConfigError outside one)."""
    tf = _tf()
    missing = [v for v in SLURM_VARIABLES if v not in os.environ]
    if missing:
        raise ConfigError(f"strategy.cluster = slurm, but {', '.join(missing)} is not set: start "
                          "every worker with srun (e.g. srun --ntasks-per-node=1 t5pre pretrain ...)")
    gpus = _visible_gpus()
    kwargs = {"auto_set_gpu": True} if gpus else {
        # CPU-only nodes: the resolver still wants a GPU count >= tasks per node; give it one
        # per task and leave CUDA_VISIBLE_DEVICES alone
        "gpus_per_node": _num_slurm_tasks(), "gpus_per_task": 1, "auto_set_gpu": False}
    try:
        resolver = tf.distribute.cluster_resolver.SlurmClusterResolver(port_base=port_base, **kwargs)
        resolver.cluster_spec()  # resolves now: bad variables fail here, with a clear message
    except (RuntimeError, ValueError, KeyError) as e:
        raise ConfigError(f"cannot build the cluster from the Slurm environment: {e}") from None
    return resolver


def resolve_strategy_name(name: str = "auto", tpu: str | None = None,
                          cluster: str = "tf_config") -> str:
    if name != "auto":
        return name
    if tpu:
        return "tpu"
    workers = _num_slurm_tasks() if cluster == "slurm" else _num_tf_config_workers(_tf_config())
    if workers > 1:
        return "multi_worker"
    if len(_tf().config.list_physical_devices("GPU")) > 1:
        return "mirrored"
    return "one_device"


def create_strategy(name: str = "auto", tpu: str | None = None, cluster: str = "tf_config",
                    port_base: int = 8888):
    """Creates the strategy; see the module docstring for what ``auto`` picks and for
    ``cluster`` (``tf_config`` | ``slurm``; ``port_base``: the first worker port under slurm)."""
    from t5pre.training.distribution_jax import check_strategy_name

    check_strategy_name(name, "tensorflow")  # JAX-only names: a clear ConfigError
    tf = _tf()
    if cluster not in CLUSTERS:
        raise ConfigError(f"unknown strategy.cluster {cluster!r}; use {' or '.join(CLUSTERS)}")
    name = resolve_strategy_name(name, tpu, cluster)
    if name == "one_device":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.MirroredStrategy([d.name for d in gpus] or None)
    if name == "multi_worker" and cluster == "slurm":
        return tf.distribute.MultiWorkerMirroredStrategy(
            cluster_resolver=slurm_cluster_resolver(port_base))
    if name == "multi_worker":
        cfg = _tf_config()
        if not cfg:
            raise ConfigError("strategy multi_worker needs TF_CONFIG (cluster and task) in the "
                              "environment of every worker; see the README")
        if "task" not in cfg or "cluster" not in cfg:
            raise ConfigError("TF_CONFIG must have both 'cluster' and 'task' keys")
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or "")
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
        except (ValueError, tf.errors.OpError) as e:
            raise ConfigError(f"cannot connect to TPU {tpu or '(local)'}: {e}") from None
        return tf.distribute.TPUStrategy(resolver)
    raise ConfigError(f"unknown strategy {name!r}; use auto, one_device, mirrored, "
                      "multi_worker or tpu")


def strategy_for(section):
    """`create_strategy` from a run config's `strategy:` section (name, tpu, cluster, port_base)."""
    return create_strategy(section.name, section.tpu, getattr(section, "cluster", "tf_config"),
                           getattr(section, "port_base", 8888))


@dataclass(frozen=True)
class WorkerInfo:
    """This process's place in the cluster."""
    task_type: str | None
    task_id: int
    num_workers: int
    is_chief: bool


def worker_info(strategy) -> WorkerInfo:
    resolver = getattr(strategy, "cluster_resolver", None)
    tf = _tf()
    if resolver is None or not isinstance(
            strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return WorkerInfo(None, 0, 1, True)
    task_type, task_id = resolver.task_type, int(resolver.task_id or 0)
    spec = resolver.cluster_spec().as_dict()
    num_workers = sum(len(spec.get(k) or []) for k in ("chief", "worker"))
    has_chief = bool(spec.get("chief"))
    is_chief = (task_type is None or task_type == "chief"
                or (task_type == "worker" and task_id == 0 and not has_chief))
    return WorkerInfo(task_type, task_id, max(num_workers, 1), is_chief)


def describe(strategy) -> str:
    info = worker_info(strategy)
    tf = _tf()
    kind = type(strategy).__name__
    for cls, name in ((tf.distribute.MultiWorkerMirroredStrategy, "MultiWorkerMirroredStrategy"),
                      (tf.distribute.TPUStrategy, "TPUStrategy"),
                      (tf.distribute.MirroredStrategy, "MirroredStrategy"),
                      (tf.distribute.OneDeviceStrategy, "OneDeviceStrategy")):
        if isinstance(strategy, cls):
            kind = name
            break
    s = f"{kind} with {strategy.num_replicas_in_sync} replica(s)"
    if info.num_workers > 1:
        s += f", worker {info.task_type}:{info.task_id} of {info.num_workers}"
    return s
