"""How much state each optimizer keeps, from variable shapes alone (no Keras, no model built).

Used by ``Adafactor.build`` (which variables are factored), by ``t5pre model info`` (memory per
device) and by ``benchmarks/optimizer_memory.py``. Counts are elements; ``iterations`` and the
learning rate (scalars) are not counted.
"""

from __future__ import annotations

import math
from typing import Iterable, Optional, Sequence

MIN_DIM_SIZE_TO_FACTOR = 128
STATEFUL_OPTIMIZERS = ("adafactor", "keras_adafactor", "adamw")


def is_factored(shape: Sequence[int], min_dim_size_to_factor: int = MIN_DIM_SIZE_TO_FACTOR) -> bool:
    """True when T5's Adafactor keeps row/column statistics for a variable of ``shape`` (rank
    >= 2 and both last dimensions >= ``min_dim_size_to_factor``) instead of a full one."""
    shape = tuple(shape)
    return (len(shape) >= 2 and shape[-1] >= min_dim_size_to_factor
            and shape[-2] >= min_dim_size_to_factor)


def adafactor_state_shapes(shape: Sequence[int], *,
                           min_dim_size_to_factor: int = MIN_DIM_SIZE_TO_FACTOR,
                           beta_1: Optional[float] = None) -> list:
    """The state T5's Adafactor keeps for one variable: [row, column] or [full], + first moment."""
    shape = tuple(int(d) for d in shape)
    if is_factored(shape, min_dim_size_to_factor):
        shapes = [shape[:-1], shape[:-2] + shape[-1:]]
    else:
        shapes = [shape]
    if beta_1:
        shapes.append(shape)
    return shapes


def _keras_adafactor_elements(shape) -> int:
    """keras.optimizers.Adafactor: a full velocity, plus row/column statistics for every matrix
    (scalar placeholders below rank 2)."""
    full = math.prod(shape)
    if len(shape) < 2:
        return full + 2
    return full + math.prod(shape[:-1]) + math.prod(shape[:-2] + shape[-1:])


def state_elements(optimizer: str, variable_shapes: Iterable[Sequence[int]], *,
                   momentum: Optional[float] = None) -> int:
    """Optimizer-state elements for variables of ``variable_shapes``."""
    shapes = [tuple(int(d) for d in s) for s in variable_shapes]
    if optimizer == "adafactor":
        return sum(math.prod(s) for shape in shapes
                   for s in adafactor_state_shapes(shape, beta_1=momentum))
    if optimizer == "keras_adafactor":
        return sum(_keras_adafactor_elements(s) for s in shapes)
    if optimizer == "adamw":  # first and second moments
        return 2 * sum(math.prod(s) for s in shapes)
    raise ValueError(f"unknown optimizer {optimizer!r} (one of {list(STATEFUL_OPTIMIZERS)})")
