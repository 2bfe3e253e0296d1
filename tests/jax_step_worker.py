"""Runs JaxBackend steps on fixed batches in a JAX process (tests/test_jax_training.py).

    KERAS_BACKEND=jax XLA_FLAGS=--xla_force_host_platform_device_count=2 \\
        python tests/jax_step_worker.py OUT.json CASE [CASE ...]

Each CASE is ``strategy:accum:optimizer[:poison]`` (e.g. ``data_parallel:1:adamw``); the
worker trains a fresh tiny T5 (same seed, so the same initial weights) for 3 steps on the same
3 global batches and writes per case the step outputs and a checksum of the final weights and
optimizer variables. ``poison`` makes the second batch's loss weights infinite.
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

BATCH, INPUTS, TARGETS, VOCAB = 8, 32, 16, 128


def batches(n=3, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        enc_len = rng.integers(8, INPUTS, size=BATCH)
        dec_len = rng.integers(3, TARGETS, size=BATCH)
        enc_mask = (np.arange(INPUTS)[None] < enc_len[:, None]).astype("int32")
        dec_mask = (np.arange(TARGETS)[None] < dec_len[:, None]).astype("int32")
        targets = rng.integers(3, VOCAB, size=(BATCH, TARGETS)).astype("int32") * dec_mask
        dec_in = np.concatenate([np.zeros((BATCH, 1), "int32"), targets[:, :-1]], 1)
        out.append({
            "encoder_token_ids": rng.integers(3, VOCAB, size=(BATCH, INPUTS)).astype("int32")
            * enc_mask,
            "encoder_padding_mask": enc_mask,
            "decoder_token_ids": dec_in, "decoder_padding_mask": dec_mask,
            "decoder_target_ids": targets,
            "decoder_loss_weights": dec_mask.astype("float32"),
        })
    return out


def build(strategy, accum, optimizer_name, clip_norm=1.0, seed=1, precision="float32"):
    from t5pre.training.optimizers import make_optimizer
    from t5pre.training.step_jax import JaxBackend
    from t5pre.training.testing import tiny_config
    from t5pre.training.trainer import build_t5_model

    cfg = tiny_config(f"strategy.name={strategy}", f"training.grad_accum_steps={accum}",
                      f"optimizer.name={optimizer_name}", "optimizer.learning_rate=1e-2",
                      f"training.clip_norm={'null' if clip_norm is None else clip_norm}",
                      "training.z_loss=1e-4", f"training.seed={seed}",
                      f"training.precision={precision}",
                      f"training.batch_size={BATCH}",
                      f"data.sequence_length.inputs={INPUTS}",
                      f"data.sequence_length.targets={TARGETS}")
    backend = JaxBackend(cfg.strategy)
    backend.setup_numerics(cfg.training)
    with backend.scope():
        model = build_t5_model(cfg, None)
        model({k: v[:1] for k, v in batches(1)[0].items()}, training=False)
        optimizer = make_optimizer(cfg.optimizer, cfg.training.precision)
        optimizer.build(model.trainable_variables)
    backend.prepare(model, optimizer)
    return cfg, backend, model, optimizer


def state_arrays(model, optimizer):
    return ([np.asarray(v.value) for v in model.trainable_variables],
            [np.asarray(v.value) for v in optimizer.variables])


def run_case(case):
    from t5pre.models import seq2seq_loss

    parts = case.split(":")
    strategy, accum, opt = parts[0], int(parts[1]), parts[2]
    poison = len(parts) > 3 and parts[3] == "poison"
    cfg, backend, model, optimizer = build(strategy, accum, opt)
    step = backend.train_step_fn(model, optimizer, seq2seq_loss, cfg.training)
    outs, before_after = [], None
    data = batches()
    if poison:
        data[1]["decoder_loss_weights"] = data[1]["decoder_loss_weights"] * np.inf
    for i, b in enumerate(data):
        if poison and i == 1:
            backend.sync()
            before = state_arrays(model, optimizer)
        out = step(backend.place(b))
        outs.append({k: float(v) for k, v in out.items()})
        if poison and i == 1:
            backend.sync()
            after = state_arrays(model, optimizer)
            before_after = all(np.array_equal(x, y) for g0, g1 in zip(before, after)
                               for x, y in zip(g0, g1))
    backend.sync()
    weights, opt_vars = state_arrays(model, optimizer)
    ev = backend.eval_step_fn(model, seq2seq_loss)(backend.place(data[0]))
    shardings = {v.path: str(getattr(v.value.sharding, "spec", "single")) for v in model.trainable_variables}
    opt_shardings = {v.path: str(getattr(v.value.sharding, "spec", "single")) for v in optimizer.variables}
    return {"outputs": outs, "weights": [w.tolist() for w in weights],
            "iterations": int(np.asarray(optimizer.iterations.value)),
            "unchanged_on_poison": before_after,
            "eval": {k: float(v) for k, v in ev.items()},
            "shardings": shardings, "opt_shardings": opt_shardings,
            "replicas": backend.num_replicas, "describe": backend.describe()}


def _damage_newest(model_dir, fmt, how="truncate"):
    """Damages one data file of the newest checkpoint: an .npy file (arrays) or the largest
    data file of the model item (orbax); ``how``: truncate, zero or flip (one byte)."""
    from t5pre.models.checkpoints import latest_checkpoint

    newest = latest_checkpoint(model_dir)
    if fmt == "arrays":
        victim = os.path.join(newest, sorted(f for f in os.listdir(newest)
                                             if f.endswith(".npy"))[0])
    else:
        files = [os.path.join(root, f) for root, _, names in os.walk(os.path.join(newest, "model"))
                 for f in names if os.sep + "d" + os.sep in os.path.join(root, f)]
        victim = max(files, key=os.path.getsize)
    size = os.path.getsize(victim)
    with open(victim, "r+b") as f:
        if how == "truncate":
            f.truncate(40 if fmt == "arrays" else size // 2)
        elif how == "zero":
            f.write(b"\0" * size)
        else:
            f.seek(size // 2)
            byte = f.read(1)
            f.seek(size // 2)
            f.write(bytes([byte[0] ^ 0x10]))
    return newest


def run_checkpoint_case(model_dir, fmt="arrays"):
    """A format's round trip, exact resume, rotation and corrupt-checkpoint fallback."""
    import keras

    from t5pre.errors import CorruptCheckpoint
    from t5pre.models import seq2seq_loss
    from t5pre.models.checkpoints import CheckpointKeeper, read_model_arrays

    data = batches(4)
    cfg, backend, model, optimizer = build("fsdp", 1, "adafactor")
    step = backend.train_step_fn(model, optimizer, seq2seq_loss, cfg.training)
    logs = []
    keeper = CheckpointKeeper(model_dir, model=model, optimizer=optimizer, format=fmt,
                              max_to_keep=2, log=logs.append)
    blocking = []
    for i in range(3):
        step(backend.place(data[i]))
        backend.sync()
        keeper.save(i + 1, (i + 1) * BATCH, 1)
        blocking.append(getattr(keeper._store, "blocking_seconds", None))
        keeper.poll()
    keeper.wait()
    saved = state_arrays(model, optimizer)
    step(backend.place(data[3]))
    backend.sync()
    uninterrupted = state_arrays(model, optimizer)

    # a fresh process-like restart: new model and optimizer with other initial weights
    keras.backend.clear_session()  # the same optimizer variable names as the first
    cfg2, backend2, model2, optimizer2 = build("fsdp", 1, "adafactor", seed=7)
    keeper2 = CheckpointKeeper(model_dir, model=model2, optimizer=optimizer2, format=fmt,
                               log=logs.append)
    restored_step, path = keeper2.restore_latest()
    restored = state_arrays(model2, optimizer2)
    round_trip = all(np.array_equal(a, b) for g0, g1 in zip(saved, restored)
                     for a, b in zip(g0, g1))
    position = keeper2.restored_position()
    step2 = backend2.train_step_fn(model2, optimizer2, seq2seq_loss, cfg2.training)
    step2(backend2.place(data[3]))
    backend2.sync()
    resumed = state_arrays(model2, optimizer2)
    exact_resume = all(np.array_equal(a, b) for g0, g1 in zip(uninterrupted, resumed)
                       for a, b in zip(g0, g1))
    kept = sorted(os.listdir(os.path.join(model_dir, "checkpoints")))

    # the same checkpoint into another layout: one device, no mesh
    keras.backend.clear_session()
    cfg3, backend3, model3, optimizer3 = build("data_parallel", 1, "adafactor", seed=9)
    keeper4 = CheckpointKeeper(model_dir, model=model3, optimizer=optimizer3, format=fmt)
    keeper4.restore_latest()
    relaid = state_arrays(model3, optimizer3)
    other_layout = all(np.array_equal(a, b) for g0, g1 in zip(saved, relaid)
                       for a, b in zip(g0, g1))

    damaged = {}
    newest = _damage_newest(model_dir, fmt, "truncate")
    keeper3 = CheckpointKeeper(model_dir, model=model2, optimizer=optimizer2, format=fmt,
                               log=logs.append)
    fallback_step, fallback_path = keeper3.restore_latest()
    for how in ("zero", "flip"):  # on copies of the previous checkpoint
        import shutil

        copy = f"{model_dir}-{how}"
        shutil.copytree(model_dir, copy)
        shutil.rmtree(os.path.join(copy, "checkpoints", os.path.basename(newest)))
        from t5pre.models.checkpoints import _write_state

        _write_state(os.path.join(copy, "checkpoints"),
                     os.path.join(copy, "checkpoints", "ckpt-2"),
                     [os.path.join(copy, "checkpoints", "ckpt-2")])
        _damage_newest(copy, fmt, how)
        try:
            read_model_arrays(os.path.join(copy, "checkpoints", "ckpt-2"))
            damaged[how] = "not detected"
        except CorruptCheckpoint as e:
            damaged[how] = str(e)
    keeper.close()
    return {"restored_step": restored_step, "path": path, "round_trip": round_trip,
            "position": list(position), "exact_resume": exact_resume, "kept": kept,
            "other_layout": other_layout,
            "fallback_step": fallback_step, "fallback_position": list(keeper3.restored_position()),
            "damaged": damaged, "blocking": blocking, "logs": logs,
            "tensorflow_imported": "tensorflow" in sys.modules}


def main(argv):
    if argv[1] == "checkpoint":
        result = run_checkpoint_case(argv[2], *argv[3:])
        with open(argv[0], "w") as f:
            json.dump(result, f)
        return
    out_path, cases = argv[0], argv[1:]
    result = {case: run_case(case) for case in cases}
    with open(out_path, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main(sys.argv[1:])
