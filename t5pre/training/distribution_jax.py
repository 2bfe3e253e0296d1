"""Where a JAX run's arrays live: ``keras.distribution`` from ``strategy.name``.

On the Keras JAX backend, ``strategy.name`` takes the JAX values

* ``data_parallel`` (what ``auto`` means on JAX): ``keras.distribution.DataParallel`` over every
  device of every process; variables replicated, the batch split along its first dimension;
* ``fsdp``: ``keras.distribution.ModelParallel`` over the same 1-D mesh (axis ``batch``) whose
  variable layouts shard the big matrices -- token embedding, attention and MLP kernels, the
  LM head -- along their largest dimension (when the device count divides it) on the axis the
  batch is sharded on, FSDP-style: each device keeps 1/N of those weights and of their
  optimizer state, and XLA all-gathers a weight where it is used. Norm scales and the small
  relative-position tables stay replicated. AdamW's moments inherit their variable's layout
  (Keras' ``add_variable_from_reference``); t5pre Adafactor's factored row/column statistics
  are vectors (replicated, tiny) and its unfactored ones get the same rule as a weight;
* ``one_device``: the first device (one process only).

TensorFlow's names (``mirrored``, ``multi_worker``, ``tpu``) are refused on JAX and these on
TensorFlow, with a ConfigError naming ``strategy.name``.

**Several hosts.** :func:`initialize_multi_host` calls ``jax.distributed.initialize()`` when
the environment describes a multi-process run: the JAX coordinator variables
(``JAX_COORDINATOR_ADDRESS`` with ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``), or a Slurm
step with more than one task (``srun``; JAX reads ``SLURM_*`` itself). Process 0 is the chief.
It must run before JAX touches a device, so the CLI calls it first thing.
"""

from __future__ import annotations

import os
import re

from t5pre.errors import ConfigError

JAX_STRATEGIES = ("data_parallel", "fsdp", "one_device")
TF_ONLY_STRATEGIES = ("mirrored", "multi_worker", "tpu")
BATCH_AXIS = "batch"

# Variables FSDP shards (by Keras path): every kernel and the token embedding.
FSDP_PATTERNS = (r".*_kernel", r".*/kernel", r"(.*/)?token_embedding/embeddings")
# Weights below this many elements stay replicated: sharding them saves nothing.
FSDP_MIN_SIZE = 1024

_initialized = False


def keras_backend_name(imported: bool = True) -> str:
    """The Keras backend: Keras' own answer once it is imported (``imported``), else read the
    way Keras reads it (``KERAS_BACKEND``, then ``~/.keras/keras.json``) without importing it."""
    import json
    import sys

    keras = sys.modules.get("keras") if imported else None
    if keras is not None and hasattr(keras, "backend"):
        return keras.backend.backend()
    backend = os.environ.get("KERAS_BACKEND")
    if not backend:
        home = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
        try:
            with open(os.path.join(home, "keras.json")) as f:
                backend = json.load(f).get("backend")
        except (OSError, ValueError, AttributeError):
            backend = None
    return backend or "tensorflow"


def _slurm_tasks() -> int:
    try:
        return int(os.environ.get("SLURM_STEP_NUM_TASKS") or os.environ.get("SLURM_NTASKS")
                   or 0)
    except ValueError:
        return 0


def multi_host_environment() -> str | None:
    """``"jax"`` / ``"slurm"`` when the environment describes a multi-process run, else None."""
    if os.environ.get("JAX_COORDINATOR_ADDRESS"):
        return "jax"
    if _slurm_tasks() > 1 and "SLURM_PROCID" in os.environ:
        return "slurm"
    return None


def initialize_multi_host() -> bool:
    """``jax.distributed.initialize()`` once, when the environment asks for several processes
    (see the module docstring). Returns whether it ran (now or before)."""
    global _initialized
    if _initialized:
        return True
    kind = multi_host_environment()
    if kind is None:
        return False
    import jax

    try:
        if kind == "jax":
            kwargs = {"coordinator_address": os.environ["JAX_COORDINATOR_ADDRESS"]}
            for key, var in (("num_processes", "JAX_NUM_PROCESSES"),
                             ("process_id", "JAX_PROCESS_ID")):
                if os.environ.get(var):
                    kwargs[key] = int(os.environ[var])
            jax.distributed.initialize(**kwargs)
        else:
            jax.distributed.initialize()  # JAX's Slurm cluster detection
    except (RuntimeError, ValueError) as e:
        raise ConfigError(f"cannot start the {kind} multi-process JAX run "
                          f"(jax.distributed.initialize): {e}") from None
    _initialized = True
    return True


def check_strategy_name(name: str, backend: str) -> str:
    """The strategy name resolved for ``backend`` (``auto`` -> ``data_parallel`` on JAX);
    ConfigError naming ``strategy.name`` for a name of the other backend."""
    if backend == "jax":
        if name == "auto":
            return "data_parallel"
        if name in TF_ONLY_STRATEGIES:
            raise ConfigError(
                f"strategy.name = {name!r} is a TensorFlow strategy; on the JAX backend "
                f"(KERAS_BACKEND=jax) use {', '.join(('auto',) + JAX_STRATEGIES)}")
        if name not in JAX_STRATEGIES:
            raise ConfigError(f"strategy.name = {name!r}: unknown; on JAX use "
                              f"{', '.join(('auto',) + JAX_STRATEGIES)}")
        return name
    if name in ("data_parallel", "fsdp"):
        raise ConfigError(
            f"strategy.name = {name!r} is a JAX strategy (keras.distribution); run with "
            "KERAS_BACKEND=jax, or on TensorFlow use auto, one_device, mirrored, multi_worker "
            "or tpu")
    return name


def _fsdp_class():
    import keras

    class FSDP(keras.distribution.ModelParallel):
        """ModelParallel whose default layout shards big matrices on their largest dimension.

        Rules in the LayoutMap (by variable path, Keras' regex semantics) win; otherwise a
        variable matching ``FSDP_PATTERNS`` -- or an optimizer state with two or more
        dimensions -- is sharded along its largest dimension divisible by the device count."""

        def get_variable_layout(self, variable):
            if getattr(variable, "_layout", None) is not None:
                return variable._layout
            explicit = self._layout_map[variable.path]
            if explicit is not None:
                return explicit
            shape = tuple(variable.shape)
            axes = [None] * len(shape)
            if fsdp_shards(variable.path, shape, self.device_mesh.shape[0]):
                axes[_largest_divisible(shape, self.device_mesh.shape[0])] = BATCH_AXIS
            return keras.distribution.TensorLayout(axes, self.device_mesh)

    return FSDP


def _largest_divisible(shape, n: int) -> int:
    best = None
    for i, d in enumerate(shape):
        if d % n == 0 and (best is None or d > shape[best]):
            best = i
    return best


def fsdp_shards(path: str, shape, devices: int) -> bool:
    """Whether FSDP shards the variable at ``path`` (a model weight or an optimizer state)."""
    import math

    if devices <= 1 or len(shape) < 2 or math.prod(shape) < FSDP_MIN_SIZE:
        return False
    if _largest_divisible(shape, devices) is None:
        return False
    name = path.split("/", 1)[-1] if "/" in path else path
    if any(re.fullmatch(p, path) or re.fullmatch(p, name) for p in FSDP_PATTERNS):
        return True
    # Optimizer states are named after their variable (adafactor/encoder_..._kernel_v).
    return bool(re.search(r"(_kernel|token_embedding_embeddings)_[a-z_]+$", path))


def create_distribution(name: str):
    """The ``keras.distribution.Distribution`` for a resolved JAX strategy name."""
    import keras

    devices = keras.distribution.list_devices()
    if name == "one_device":
        import jax

        if jax.process_count() > 1:
            raise ConfigError(f"strategy.name = 'one_device' with {jax.process_count()} JAX "
                              "processes: use data_parallel or fsdp")
        devices = devices[:1]
    mesh = keras.distribution.DeviceMesh((len(devices),), [BATCH_AXIS], devices)
    if name in ("data_parallel", "one_device"):
        return keras.distribution.DataParallel(device_mesh=mesh, auto_shard_dataset=False)
    if name == "fsdp":
        layout_map = keras.distribution.LayoutMap(mesh)
        return _fsdp_class()(layout_map=layout_map, batch_dim_name=BATCH_AXIS,
                             auto_shard_dataset=False)
    raise ConfigError(f"strategy.name = {name!r}: unknown on JAX")
