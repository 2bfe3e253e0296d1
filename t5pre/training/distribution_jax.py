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

**Stopping and failing together.** In a multi-process run JAX's preemption service is on:
SIGTERM to any one process (a preemption notice often reaches one host first) is caught by
JAX's notifier and shared through the coordination service; :func:`reached_stop_point` then
answers True on every process at the same step (the loop asks it after every step, about
8 us on CPU), so every process saves the same checkpoint and exits 130. A lost process is
noticed by the coordination service's heartbeat (``T5PRE_JAX_HEARTBEAT_TIMEOUT`` seconds,
default 15) or at once by a collective; either way every surviving process prints one line and
exits with code 4 (:func:`install_abort_exit`: the runtime's own reaction is ``abort()``).
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

HEARTBEAT_TIMEOUT_ENV = "T5PRE_JAX_HEARTBEAT_TIMEOUT"
DEFAULT_HEARTBEAT_TIMEOUT = 15  # seconds: a lost process ends the run within ~2x this
LOST_WORKER_EXIT = 4  # WorkerLostError.exit_code (not imported: this runs in a signal handler)


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

    kwargs = {"heartbeat_timeout_seconds": heartbeat_timeout()}
    try:
        if kind == "jax":
            kwargs["coordinator_address"] = os.environ["JAX_COORDINATOR_ADDRESS"]
            for key, var in (("num_processes", "JAX_NUM_PROCESSES"),
                             ("process_id", "JAX_PROCESS_ID")):
                if os.environ.get(var):
                    kwargs[key] = int(os.environ[var])
        jax.distributed.initialize(**kwargs)  # without an address: JAX's Slurm detection
    except (RuntimeError, ValueError) as e:
        raise ConfigError(f"cannot start the {kind} multi-process JAX run "
                          f"(jax.distributed.initialize): {e}") from None
    _initialized = True
    install_abort_exit(jax.process_count())
    return True


def heartbeat_timeout() -> int:
    """Seconds without a heartbeat after which JAX's coordination service declares a process
    dead (``T5PRE_JAX_HEARTBEAT_TIMEOUT``; JAX's own default, 100 s, is too slow a reaction)."""
    value = os.environ.get(HEARTBEAT_TIMEOUT_ENV, "")
    try:
        seconds = int(value) if value else DEFAULT_HEARTBEAT_TIMEOUT
    except ValueError:
        raise ConfigError(f"{HEARTBEAT_TIMEOUT_ENV}={value!r}: give whole seconds") from None
    if seconds < 1:
        raise ConfigError(f"{HEARTBEAT_TIMEOUT_ENV}={value!r}: must be at least 1")
    return seconds


def multi_host_initialized() -> bool:
    return _initialized


def lost_worker_message(processes: int, detail: str = "", model_dir: str | None = None) -> str:
    """The one line a surviving process prints when a peer is lost (WorkerLostError's text)."""
    where = f"the checkpoints in {model_dir}" if model_dir else "the checkpoints written"
    return (f"a worker of this {processes}-worker run stopped answering"
            f"{f' ({detail})' if detail else ''}; {where} are intact: restart every worker "
            "with the same command to resume")


_abort_handler = None  # the ctypes callback must outlive the handler's installation


def install_abort_exit(processes: int) -> bool:
    """Turns the JAX distributed runtime's ``abort()`` into the documented exit.

    When the coordination service reports a dead peer (a missed heartbeat, or the chief's
    coordinator gone), XLA's client logs a fatal error and calls ``abort()`` from a C++ thread:
    exit 134 and a C++ stack trace, not the documented "stopped answering" line and exit 4.
    JAX exposes no callback that works for this (``missed_heartbeat_callback`` cannot be given
    through ``jax.distributed.initialize``), so a C-level SIGABRT handler (ctypes) prints the
    line and leaves with ``os._exit(4)``. Checkpoints are safe: a save in progress leaves only a
    ``ckpt-N_temp*`` directory that the next run removes. Returns whether it was installed."""
    global _abort_handler
    import ctypes
    import signal
    import sys

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        handler_type = ctypes.CFUNCTYPE(None, ctypes.c_int)
    except (OSError, AttributeError):
        return False
    line = ("t5pre: error: " + lost_worker_message(
        processes, "the JAX distributed runtime aborted; see its log lines above") + "\n")

    def on_abort(signum):  # runs in the aborting C++ thread, with the GIL taken by ctypes
        try:
            sys.stdout.flush()
        except Exception:
            pass
        os.write(2, line.encode())
        os._exit(LOST_WORKER_EXIT)

    _abort_handler = handler_type(on_abort)
    libc.signal.restype = ctypes.c_void_p
    libc.signal.argtypes = [ctypes.c_int, handler_type]
    libc.signal(signal.SIGABRT, _abort_handler)
    return True


def exit_now(code: int) -> None:
    """Leaves a multi-process JAX run at once with ``code`` (after a lost peer): JAX's exit
    handler would wait for the dead process at the shutdown barrier and then abort."""
    if not _initialized:
        return
    import sys

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(code)


def preemption_sync_available() -> bool:
    """Whether JAX's preemption service runs (a multi-process run; it catches SIGTERM)."""
    if not _initialized:
        return False
    from jax._src import distributed

    return distributed.global_state.preemption_sync_manager is not None


def reached_stop_point(step: int, requested_here: bool = False) -> bool:
    """True on every process at the same step once any process got SIGTERM (JAX's preemption
    sync point). Every process must call it after every step, with the same step numbers.
    ``requested_here`` is not needed: JAX's notifier catches SIGTERM itself."""
    from jax.experimental import multihost_utils

    return bool(multihost_utils.reached_preemption_sync_point(step))


reached_stop_point.catches_sigterm = True


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
