"""Estimated memory per device of a training run (``t5pre model info``): parameters, gradients,
optimizer state and activations, from the config alone (no model is built).

The model's part (parameter shapes, activations per example) is :mod:`t5pre.models.info`; the
optimizer's state sizes are :mod:`t5pre.training.optimizer_state`.
"""

from __future__ import annotations

import math

from t5pre.models.config import T5Config
from t5pre.models.info import activation_elements, all_parameter_shapes
from t5pre.training.optimizer_state import state_elements

STRATEGIES = ("data_parallel", "fsdp")


def memory_per_device(config: T5Config, *, batch_size: int, inputs_length: int,
                      targets_length: int, optimizer: str = "adafactor", devices: int = 1,
                      strategy: str = "data_parallel", precision: str = "float32",
                      remat: bool = False) -> dict:
    """Estimated bytes per device: parameters, gradients, optimizer state (float32, divided by
    ``devices`` under ``fsdp``) and activations (the per-device share of ``batch_size``; 2 bytes
    each under mixed precision, else 4)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r} (one of {list(STRATEGIES)})")
    shapes = all_parameter_shapes(config)
    shard = devices if strategy == "fsdp" else 1
    params = 4 * sum(math.prod(s) for s in shapes) / shard
    per_device_batch = math.ceil(batch_size / devices)
    act_bytes = 2 if precision.startswith("mixed") else 4
    out = {
        "parameters": params,
        "gradients": params,
        "optimizer_state": 4 * state_elements(optimizer, shapes) / shard,
        "activations": act_bytes * per_device_batch
        * activation_elements(config, inputs_length, targets_length, remat=remat),
    }
    out["total"] = sum(out.values())
    return out
