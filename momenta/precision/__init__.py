"""Low-precision optimizer state: bf16 stochastic rounding and compensated writes.

The first layer of issue 14: pure tensor functions the engine calls inside its compiled
kernels, with no state of their own::

    key = step_key(seed, step)                   # 0-dim int64; seed, step ints or 0-dim tensors
    bits = random_bits(key, n, offset)           # hash(key, offset + i), int64 in [0, 2³²)
    p_bf16 = stochastic_round_bf16(w, key, offset)
    w = compensated_read(p, c); p, c = compensated_write(w)
"""

from __future__ import annotations

from .rounding import (
    compensated_read,
    compensated_write,
    random_bits,
    step_key,
    stochastic_round_bf16,
)

__all__ = [
    "compensated_read",
    "compensated_write",
    "random_bits",
    "step_key",
    "stochastic_round_bf16",
]
