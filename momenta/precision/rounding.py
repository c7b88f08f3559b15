"""Writing float32 results into bfloat16: stochastic rounding, and a compensation buffer.

Stochastic rounding (``param_rounding="stochastic"``, and bf16 state)::

    r      = 16 bits of hash(seed, step, ⌊(stream+1)/2⌋, i)    (i: the element's index)
    round(x) = bf16( bits⁻¹((bits(x) + r) & ~(2¹⁶ − 1)) )

``bits(x)`` is x's float32 pattern; bfloat16 is its upper 16 bits. Adding ``r`` uniform in
``[0, 2¹⁶)`` carries into bit 16 with probability (low 16 bits)/2¹⁶, so ``x`` rounds away from
zero with probability proportional to its distance from the value below: ``E[round(x)] = x``,
and an EMA of increments far below half a bf16 ulp still moves (round-to-nearest stalls).

The random bits are a counter-based hash of ``(seed, step, stream, index)`` in integer tensor
math (a 32-bit xor-shift-multiply mix: the per-call part in int64, every product below 2⁶³;
the one mix an element in int32 lanes, products wrapping modulo 2³², the same bits), not a
generator's state:
a compiled kernel computes them in its loop, two runs with the same ``(seed, step, index)``
get the same bits, and a resumed run needs nothing but the seed and the step.

Compensated updates (``param_rounding="compensated"``): a bfloat16 ``c`` beside each bfloat16
parameter ``p`` holds what rounding dropped; ``p + c`` is the parameter (about 16 significant
bits)::

    w  = p + c                      (float32, :func:`compensated_read`)
    w' = w − lr·d                   (the rule's update, float32)
    p' = bf16(w'),  c' = bf16(w' − p')                          (:func:`compensated_write`)

Sources: Gupta, Agrawal, Gopalakrishnan & Narayanan, "Deep Learning with Limited Numerical
Precision", ICML 2015 (stochastic rounding); Zamirai, Zhang, Aberger & De Sa, "Revisiting
BFloat16 Training", 2020 (stochastic rounding and Kahan summation of bf16 weights);
Kahan, "Further remarks on reducing truncation errors", CACM 1965; the hash's multipliers are
from C. Wellons' hash-prospector (``[16 21f0aaad 15 735a2d97 15]``); torchao's
``_fp32_to_bf16_sr`` (the same bit trick, with a generator's random bits).
"""

from __future__ import annotations

import torch
from torch import Tensor

_M32 = 0xFFFFFFFF


def _mix(x: Tensor) -> Tensor:
    """A 32-bit avalanche mix of int64 values in ``[0, 2³²)`` (products stay below 2⁶³)."""
    x = x ^ (x >> 16)
    x = (x * 0x21F0AAAD) & _M32
    x = x ^ (x >> 15)
    x = (x * 0x735A2D97) & _M32
    return x ^ (x >> 15)


def _mix32(x: Tensor) -> Tensor:
    """:func:`_mix` on int32 tensors holding 32-bit patterns: the same bits, in 32-bit lanes.

    Products wrap modulo 2³² as the 64-bit version's masks do; ``>>`` on int32 is
    arithmetic, so each shift masks off the copies of the sign bit it brings in. Vector
    units multiply 32-bit lanes in one instruction and 64-bit lanes in several (or, without
    AVX-512 DQ, emulate them); the elementwise hash of a stochastic rounding is half its
    kernel's arithmetic."""
    x = x ^ ((x >> 16) & 0xFFFF)
    x = x * 0x21F0AAAD
    x = x ^ ((x >> 15) & 0x1FFFF)
    x = x * 0x735A2D97
    return x ^ ((x >> 15) & 0x1FFFF)


def _int64(v: int | Tensor) -> Tensor:
    if isinstance(v, Tensor):
        return v.to(torch.int64)
    v %= 1 << 64  # a torch generator's seed may be any unsigned 64-bit number
    return torch.tensor(v - (1 << 64) if v >= 1 << 63 else v, dtype=torch.int64)


def step_key(seed: int | Tensor, step: int | Tensor) -> Tensor:
    """``hash(seed, step)``: one 0-dim int64 in ``[0, 2³²)`` for a step's random bits.

    Args:
        seed: any 64-bit integer (an int, or a 0-dim integer tensor: the optimizer's seed).
        step: the step number (an int or a 0-dim integer tensor, so a compiled step does not
            recompile as it changes).
    """
    seed, step = _int64(seed), _int64(step)
    h = _mix(seed & _M32)
    h = _mix(h ^ ((seed >> 32) & _M32))
    h = _mix(h ^ (step & _M32))
    return _mix(h ^ ((step >> 32) & _M32))


def random_bits(key: Tensor, n: int, offset: int | Tensor = 0, stream: int = 0) -> Tensor:
    """``hash(key, stream, i)`` for ``i = offset … offset + n − 1``: int64 values in ``[0, 2³²)``.

    The high 32 bits of ``i`` (those of ``offset``: the engine's offsets are ``k·2³² + j`` for
    element ``j`` of its ``k``-th parameter) and the stream are mixed into the key once a call;
    each element then costs one mix of its low 32 bits (a bijection of 32-bit values, so the
    elements of a run of 2³² never share their bits).

    Args:
        key: :func:`step_key` of the seed and step.
        n: how many.
        offset: the index of the first element (see above), so that each element has its own
            bits whatever the order or grouping in which elements are rounded.
        stream: which of a step's independent draws (the weights, each state buffer …).
    """
    return _hash32(key, n, offset, stream).to(torch.int64) & _M32


def _hash32(key: Tensor, n: int, offset: int | Tensor, stream: int) -> Tensor:
    """:func:`random_bits` as int32 patterns (a value ``≥ 2³¹`` reads as negative)."""
    high = offset >> 32 if isinstance(offset, Tensor) else torch.tensor(offset >> 32, dtype=torch.int64)
    k = _mix(key ^ _mix(high.to(key.device) ^ ((0x9E3779B9 * (stream + 1)) & _M32)))
    i = torch.arange(n, dtype=torch.int64, device=key.device) + (offset & _M32)
    # the low 32 bits of i ^ k as int32 (a wrapping cast), mixed in 32-bit lanes
    return _mix32((i ^ k).to(torch.int32))


def random_halves(key: Tensor, n: int, offset: int | Tensor = 0, stream: int = 0) -> Tensor:
    """16 random bits an element (int32 values in ``[0, 2¹⁶)``) for ``stream``: the upper half
    of :func:`random_bits`' hash ``(stream + 1) // 2`` for an odd stream, the lower half for
    the even one after it (stream 0, the weights', has the lower half of hash 0 alone).

    Two streams share one hash, so a kernel that draws for both (the engine's first two state
    buffers, streams 1 and 2) computes it once. Same arguments as :func:`random_bits`."""
    h = _hash32(key, n, offset, (stream + 1) // 2)
    return ((h >> 16) if stream % 2 == 1 else h) & 0xFFFF


def stochastic_round_bf16(x: Tensor, key: Tensor, offset: int | Tensor = 0, stream: int = 0) -> Tensor:
    """``x`` (float32, any shape) rounded stochastically to bfloat16 (see the module).

    Unbiased for every finite ``x``; ``±inf`` and NaN pass through. A finite value above the
    largest bfloat16 may round up to ``inf`` (with the probability of its excess).

    Args:
        x: float32 values.
        key: :func:`step_key` of the seed and step.
        offset: the flat index of ``x``'s first element (see :func:`random_bits`).
        stream: which of the step's draws (see :func:`random_bits`).
    """
    flat = x.reshape(-1).to(torch.float32)
    r = random_halves(key, flat.numel(), offset, stream)
    nan = flat != flat  # (isnan does not vectorise in Inductor's CPU loops)
    bits = torch.where(nan, 0.0, flat).view(torch.int32)  # a NaN pattern could overflow
    rounded = ((bits + r) & -65536).view(torch.float32)
    out = torch.where(nan, flat, rounded).to(torch.bfloat16)  # exact: the low bits are zero
    return out.reshape(x.shape)


def compensated_read(p: Tensor, c: Tensor) -> Tensor:
    """``p + c`` in float32: the parameter that a bf16 ``p`` and its compensation ``c`` hold."""
    return p.to(torch.float32) + c.to(torch.float32)


def round_bf16(w: Tensor) -> Tensor:
    """``w`` (float32) rounded to the nearest bfloat16 (ties to even), as a float32 tensor.

    Integer math on the bit pattern, not a cast: a compiler may drop a cast to bfloat16 and
    back as a no-op (Inductor does, unless it emulates precision casts), and the difference
    ``w − round(w)`` a compensation keeps would then be 0. NaN stays NaN; ``±inf`` stays."""
    bits = torch.where(w != w, 0.0, w).view(torch.int32)  # a NaN pattern could carry into inf
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) & -65536).view(torch.float32)
    return torch.where(w != w, w, rounded)


def compensated_write(w: Tensor, dtype: torch.dtype = torch.bfloat16) -> tuple[Tensor, Tensor]:
    """``(p, c)``: ``w`` (float32) rounded to nearest, and what the rounding dropped.

    Args:
        w: the new parameter, float32.
        dtype: the parameter's (and the compensation's) dtype.
    """
    if dtype != torch.bfloat16:
        p = w.to(dtype)
        return p, (w - p.to(torch.float32)).to(dtype)
    p32 = round_bf16(w.to(torch.float32))
    return p32.to(dtype), (w - p32).to(dtype)  # both casts exact: p32 is a bfloat16 value
