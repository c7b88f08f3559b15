"""Low-precision optimizer state: blockwise codes, bf16 stochastic rounding, compensated writes.

Pure tensor functions, with no state of their own, that the engine's storage
(:mod:`momenta.engine.storage`: ``state_precision=``, ``param_rounding=``) calls on the
reference path and inside its compiled kernels. Arithmetic is float32; only storage is narrow.

The API::

    c = codec("int8" | "int4", signed)           # a Codec: a Format (code table) and a block
    codes, scales = c.encode(x)                  # x flat, len(x) % c.block == 0
    x = c.decode(codes, scales)                  # float32, flat
    codes, scales = c.encode_rows(x)             # x (rows, k·block): the fast path's shape
    x = c.decode_rows(codes, scales)
    c.empty(n), c.codes_numel(n), c.scales_numel(n), c.bytes_per_element()

    key = step_key(seed, step)                   # 0-dim int64; seed, step ints or 0-dim tensors
    bits = random_bits(key, n, offset, stream)   # hash(key, stream, offset + i), int64 in [0, 2³²)
    half = random_halves(key, n, offset, stream) # 16 bits of it; two streams share a hash
    p_bf16 = stochastic_round_bf16(w, key, offset, stream)
    w = compensated_read(p, c); p, c = compensated_write(w)

A kernel of the fast path for a parameter whose ``exp_avg`` is int8 and ``exp_avg_sq`` int4
(:func:`momenta.engine.storage.step`, compiled by the engine with :data:`COMPILE_OPTIONS`)::

    m = codec_m.decode_rows(m_codes, m_scales)   # decode ...
    v = codec_v.decode_rows(v_codes, v_scales)
    p, m, v = <the rules' update, float32>       # ... update ...
    m_codes[:], m_scales[:] = codec_m.encode_rows(m)   # ... encode, in place
    v_codes[:], v_scales[:] = codec_v.encode_rows(v)

Inductor compiles it to two loops over the rows of blocks: the blocks' maxima, then the codes,
each decoding and updating again (the new ``m`` and ``V`` are recomputed, not written to
memory: with Inductor's defaults they were, two float32 passes that cost more than the whole
float32 step). The rows keep every index free of divisions, so both loops vectorise.
:func:`momenta.precision.harness.coded_adamw_step` is the same for AdamW on its own, the
yardstick of the accuracy benchmark.

What the engine does with them (:mod:`momenta.engine.storage`):

* **Storage**: per buffer and bucket, a flat ``uint8`` codes tensor and a flat float32 scales
  tensor; each parameter's region starts on a whole block, so a block never straddles two
  parameters. Zero padding codes to 0 and never changes a scale; the fast path codes the
  padding of a parameter's last block as zeros whatever the rules computed there.
* **Bytes**: ``c.bytes_per_element()`` is 1 + 4/256 (int8) or 1/2 + 4/128 (int4); AdamW's
  two buffers take 2.03 or 1.06 bytes a parameter.
* **Which buffers are signed**: a rule declares the buffers that are never negative
  (:meth:`momenta.rules.base.Rule.nonnegative`); they take the unsigned codec. An unsigned
  codec reads a negative value back as 0. Small tensors (under 4096 elements), the buffers a
  rule declares exact, step counts and scalar state stay in full precision.
* **Checkpoints**: ``codes`` and ``scales`` are plain tensors (``weights_only`` loads them);
  the precision string names the codec and lives in the param group.
* **Random bits**: the group's seed and the parameter's step give ``step_key``; ``offset`` is
  ``k·2³² + j`` for element ``j`` of the optimizer's ``k``-th parameter, which no layout or
  resume changes; each buffer and the weights draw their own ``stream``.
* **Non-finite values**: the codecs keep a NaN or inf from spreading through its block (see
  :mod:`momenta.precision.codecs`); with ``nonfinite="skip"|"raise"`` none reaches them.

Why these maps (issue 14's accuracy measure, ``benchmarks/bench_lowbit_accuracy.py``):
see :mod:`momenta.precision.codecs`. Speed (``benchmarks/bench_lowbit.py``, results in
``benchmarks/RESULTS-lowbit.md``): the coded kernels are compute-bound, bf16 state is not yet
faster than float32 (see there).
"""

from __future__ import annotations

from .codecs import COMPILE_OPTIONS, Codec, Format, codec
from .rounding import (
    compensated_read,
    compensated_write,
    random_bits,
    random_halves,
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
    "random_halves",
    "step_key",
    "stochastic_round_bf16",
]
