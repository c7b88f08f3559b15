"""Low-precision optimizer state: blockwise codes, bf16 stochastic rounding, compensated writes.

The first layer of issue 14: pure tensor functions the engine calls inside its compiled
kernels, with no state of their own. Arithmetic is float32; only storage is narrow.

The API (what the engine builds on)::

    c = codec("int8" | "int4", signed)           # a Codec: a Format (code table) and a block
    codes, scales = c.encode(x)                  # x flat, len(x) % c.block == 0
    x = c.decode(codes, scales)                  # float32, flat
    c.empty(n), c.codes_numel(n), c.scales_numel(n), c.bytes_per_element()

    key = step_key(seed, step)                   # 0-dim int64; seed, step ints or 0-dim tensors
    bits = random_bits(key, n, offset)           # hash(key, offset + i), int64 in [0, 2³²)
    p_bf16 = stochastic_round_bf16(w, key, offset)
    w = compensated_read(p, c); p, c = compensated_write(w)

A kernel of the fast path, for a bucket whose ``exp_avg`` is int8 and ``exp_avg_sq`` int4::

    m = codec_m.decode(m_codes, m_scales)        # decode ...
    v = codec_v.decode(v_codes, v_scales)
    p, m, v = <the rules' update, float32>       # ... update ...
    m_codes[:], m_scales[:] = codec_m.encode(m)  # ... encode: one loop after Inductor
    v_codes[:], v_scales[:] = codec_v.encode(v)

compiled with ``torch.compile(..., options=COMPILE_OPTIONS)`` (without them Inductor writes
the updated float32 ``m`` and ``V`` to memory between the block max and the encode).
:func:`momenta.precision.harness.coded_adamw_step` is that kernel for AdamW, compiled and
checked against eager in the tests. Writing the codes in place (``copy_`` into the buffers
just decoded) measured no slower than returning new ones, and needs no second buffer.

What the engine owns (not here):

* **Storage**: per buffer and bucket, a flat ``uint8`` codes tensor (``codes_numel(n)``) and a
  flat float32 scales tensor (``scales_numel(n)``); ``n`` is the bucket's length with every
  region (a parameter, or a rank's shard of one) padded to a multiple of ``codec.block``, so a
  block never straddles two parameters or two ranks. Zero padding codes to 0 and never changes
  a scale; padding must stay zero (mask or re-zero the gradient's padding).
* **Bytes**: ``c.bytes_per_element()`` is 1 + 4/256 (int8) or 1/2 + 4/128 (int4); AdamW's
  two buffers take 2.03 or 1.06 bytes a parameter.
* **Which buffers are signed**: a rule declares ``m``-like (any sign: ``signed=True``) or
  ``V``-like (never negative: ``signed=False``) for each buffer. An unsigned codec reads a
  negative value back as 0, so a rule must not mark a buffer that can go negative unsigned.
  Small tensors (under 4096 elements), step counts and scalar state stay in full precision.
* **Checkpoints**: ``codes`` and ``scales`` are plain tensors (``weights_only`` loads them);
  the precision string names the codec, so store it in the param group. To load float32
  state, ``encode`` it; to give float32 state, ``decode``.
* **Random bits**: a seed the optimizer owns (saved in its state_dict) and the step number
  give ``step_key``; ``offset`` is each element's index in a layout that does not change when
  a run is resumed or resharded (the element's index in the concatenation of the parameters,
  say, not in a bucket that may be regrouped), so resumed runs round bit for bit alike.
* **Non-finite values**: the codecs keep a NaN or inf from spreading through its block (see
  :mod:`momenta.precision.codecs`); with ``nonfinite="skip"|"raise"`` none reaches them.

Why these maps (issue 14's accuracy measure, ``benchmarks/bench_lowbit_accuracy.py``):
see :mod:`momenta.precision.codecs`.

Speed, measured (``benchmarks/bench_lowbit_accuracy.py --no-accuracy --threads 1``: AdamW on
16 × 2²⁰ float32 parameters, one thread, on a 2-core machine that another benchmark kept busy,
so only ratios within one run mean anything; torch's fused AdamW on the 16 tensors is 1):
a compiled float32 step on one flat buffer 0.83×; decode → AdamW → encode compiled, int8
0.24×, int4 0.12–0.14× (issue 14's target for the integrated engine is 0.5×). The kernel is
compute-bound, not memory-bound: Inductor makes one pass a block for the block max and a
second for the codes, and each decodes and updates again; the fourth roots are 18 of int8's
47 ms (a linear map: 0.38×). With two threads torch's fused step (16 parallel regions) suffered
most from the other benchmark (120 ms), so two-thread ratios from that run are not quoted.
"""

from __future__ import annotations

from .codecs import COMPILE_OPTIONS, Codec, Format, codec
from .rounding import (
    compensated_read,
    compensated_write,
    random_bits,
    step_key,
    stochastic_round_bf16,
)

__all__ = [
    "COMPILE_OPTIONS",
    "Codec",
    "Format",
    "codec",
    "compensated_read",
    "compensated_write",
    "random_bits",
    "step_key",
    "stochastic_round_bf16",
]
