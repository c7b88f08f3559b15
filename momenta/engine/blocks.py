"""C++ kernels of their own for low-precision state: coded (int8, int4) blocks decoded,
updated and encoded in one pass; bf16 state updated and rounded stochastically in one loop.

    for each block b of B elements (256 for int8, 128 for int4; in parallel over the blocks):
        x_k[i]   = decode(codes_k[i], scale_k[b])         each coded buffer k, float32
        p[i], x'_k[i] = the rules' update                 generated C++, one statement an op
        x'_k[i]  = 0 where i is past the parameter        (the padding codes as zeros)
        d'_k     = max_i |x'_k[i]| (finite)               the block's scale, from the values
        codes_k[i], scale_k[b] = encode(x'_k[i], d'_k)     kept in L1 since the update
                                   (int4: rounded stochastically, the noise of
                                   precision.rounding's hash of each element's place)

bf16 state (:func:`elementwise_source`) is one loop over the elements: read, update, write
each new value rounded stochastically (``precision.rounding``'s bit trick, the hash of two
streams computed once); Inductor's kernel of it cast and hashed in wider, slower lanes.

Inductor compiles the coded step (:func:`.storage.step`) as two loops over the blocks, the
maxima and then the codes, each decoding and updating again: it cannot keep a block's
updated values between two loops (an outer-loop fusion it attempts fails on the scales'
loop), so every element is decoded and updated twice, and its vectorised codec costs about
eleven instructions an element. Here a block's new values stay in a local array between
the update and the encode, and the compiler vectorises the loops itself (``#pragma omp
simd``): measured in ``benchmarks/bench_lowbit.py`` (RESULTS-lowbit.md), about twice as fast
as Inductor's kernel for AdamW with int8 state.

The update is not written by hand: :func:`reference.update` is traced (``make_fx``, 1-D
float32 tensors, every number read by name from the kernel's packed numbers, as
:mod:`.kernels` does) and each aten op becomes one C++ statement on ``float``s. Where a
rule uses an op this module does not know, or a storage it does not cover (see
:func:`supported`), :func:`kernel` answers ``None`` and the engine compiles with Inductor.

Numbers: each op rounds to float32 as Inductor's generated code does (no contraction into
fused multiply-adds: ``-ffp-contract=off``; ``sqrt`` and ``/`` are IEEE's;
``-fno-trapping-math`` lets the compiler compute both sides of a select, which changes no
value), and the codecs (:mod:`momenta.precision.codecs`: int8's linear maps of ∜|x|, int4's
E2M1 and E2M2) and the hash are written out below in the same order of operations:
parameters, codes and scales equal Inductor's kernel's to the bit, for every elementwise
optimizer at int8, for AdamW at int4 and for six optimizers at bf16 (``tests/test_blocks.py``,
which also checks the C++ codecs and random bits against torch's). Both differ
from the eager path where torch's eager kernels divide by a scalar through its reciprocal
(a code step now and then; ``tests/test_state_precision.py`` bounds it).

Built once per kernel source by the C++ compiler Inductor uses (``-O3 -march=native
-fopenmp``), into Inductor's cache directory; a build that fails is reported once and the
engine keeps Inductor's kernel.
"""

from __future__ import annotations

import ctypes
import dataclasses
import hashlib
import logging
import os
import platform
import subprocess
import threading
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..precision import codecs
from . import compat
from .composition import Rules
from .reference import Scalars, update
from .storage import Storage

log = logging.getLogger("momenta")

#: the codecs written out below, by their C++ names: int8 (linear in ∜|x|, blocks of 256)
#: and int4 (E2M1 signed, E2M2 unsigned, blocks of 128, two codes a byte)
_FORMATS = {
    codecs.PRECISIONS["int8"][0]: "s8", codecs.PRECISIONS["int8"][1]: "u8",
    codecs.PRECISIONS["int4"][0]: "s4", codecs.PRECISIONS["int4"][1]: "u4",
}  # fmt: skip

_PRELUDE = r"""
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

static const float INF = std::numeric_limits<float>::infinity();
static const float NAN_ = std::numeric_limits<float>::quiet_NaN();
static const float TINY = 1.17549435082228750797e-38f;  // 2^-126

// codecs.Format(8, signed, 0, power=4): x̂ = ±(q · 2^-M · d)^4
static inline float decode_s8(int q, float d) {
  int mag = q & 127;
  float y = (float)mag * 0.0078125f;  // 2^-7
  y = y * d; y = y * y; y = y * y;
  y = q >= 128 ? -y : y;
  return q == 128 ? NAN_ : y;
}
static inline float decode_u8(int q, float d) {
  float y = (float)q * 0.00390625f;  // 2^-8
  y = y * d; y = y * y;
  return y * y;
}
// the block's scale from the root of its largest finite magnitude
static inline float scale_of(float root, float vmax) {
  float d = root / vmax;
  return d > 0.f ? std::max(d, TINY) : 0.f;
}
static inline int encode_s8(float x, float inv, float) {
  float y = std::sqrt(std::sqrt(std::fabs(x))) * inv;
  y = y <= 0.9921875f ? y : 0.9921875f;  // vmax = 1 - 2^-7; NaN saturates
  int q = (int)std::nearbyint(y * 128.f);
  q = (x < 0.f && q > 0) ? (q | 128) : q;
  q = x != x ? 128 : q;  // NaN: "sign set, magnitude 0"
  return q;
}
static inline int encode_u8(float x, float inv, float) {
  float r = x < 0.f ? 0.f : std::sqrt(std::sqrt(x));
  float y = r * inv;
  y = y <= 0.99609375f ? y : 0.99609375f;  // vmax = 1 - 2^-8; NaN saturates
  int q = (int)std::nearbyint(y * 256.f);
  return std::max(q, (int)(r > 0.f));  // never 0 for a positive value: the zero point
}
// codecs.Format(4, signed, 2): E2M1 (vmax 6) signed, E2M2 (vmax 7) unsigned; codes round
// stochastically, floor(t + noise), noise uniform in [0, 1)
template <int M>
static inline float value_e2(int q) {
  const float small = (float)q * (1.f / (1 << M));
  const int e = q >> M;
  float unit = 1.f / (1 << M);
  unit = e == 2 ? 2.f / (1 << M) : unit;
  unit = e == 3 ? 4.f / (1 << M) : unit;
  const float normal = (float)((q & ((1 << M) - 1)) + (1 << M)) * unit;
  return q < (1 << M) ? small : normal;
}
template <int M>
static inline int code_e2(float y, float noise, float vmax) {
  y = y <= vmax ? y : vmax;
  const int small = (int)std::floor(y * (float)(1 << M) + noise);
  int k = 0;
  float inv = 1.f;
  k = y >= 2.f ? 1 : k; inv = y >= 2.f ? 0.5f : inv;
  k = y >= 4.f ? 2 : k; inv = y >= 4.f ? 0.25f : inv;
  const int normal = ((k + 1) << M) + (int)std::floor((y * inv - 1.f) * (float)(1 << M) + noise);
  const int q = y < 1.f ? small : normal;
  return q < (1 << (2 + M)) - 1 ? q : (1 << (2 + M)) - 1;
}
static inline float decode_s4(int q, float d) {
  float y = value_e2<1>(q & 7) * d;
  y = q >= 8 ? -y : y;
  return q == 8 ? NAN_ : y;
}
static inline float decode_u4(int q, float d) { return value_e2<2>(q) * d; }
static inline int encode_s4(float x, float inv, float noise) {
  int q = code_e2<1>(std::fabs(x) * inv, noise, 6.f);
  q = (x < 0.f && q > 0) ? (q | 8) : q;
  return x != x ? 8 : q;
}
static inline int encode_u4(float x, float inv, float noise) {
  const float r = x < 0.f ? 0.f : x;
  const int q = code_e2<2>(r * inv, noise, 7.f);
  return std::max(q, (int)(r > 0.f));  // (q ≥ 0)
}
// precision.rounding's hash: a per-call key (int64 mixes, products below 2^63), then one
// 32-bit mix an element; 16 bits of it are the element's uniform noise
static inline uint64_t mix64(uint64_t x) {
  x ^= x >> 16; x = (x * 0x21F0AAADull) & 0xFFFFFFFFull;
  x ^= x >> 15; x = (x * 0x735A2D97ull) & 0xFFFFFFFFull;
  return x ^ (x >> 15);
}
static inline uint32_t mix32(uint32_t x) {
  x ^= x >> 16; x *= 0x21F0AAADu; x ^= x >> 15; x *= 0x735A2D97u;
  return x ^ (x >> 15);
}
static inline uint32_t stream_key(int64_t key, int64_t offset, int stream) {  // stream: the hash's
  const uint64_t high = (uint64_t)(offset >> 32);
  const uint64_t s = (0x9E3779B9ull * (uint64_t)(stream + 1)) & 0xFFFFFFFFull;
  return (uint32_t)mix64((uint64_t)key ^ mix64(high ^ s));
}
// bfloat16 storage: its value, and precision.rounding.stochastic_round_bf16 (16 random bits
// added to the float32 pattern, the low half dropped; NaN as torch converts it)
static inline float bf16_value(uint16_t h) {
  const uint32_t b = (uint32_t)h << 16;
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}
static inline uint16_t bf16_round(float x, uint32_t r) {
  uint32_t b;
  std::memcpy(&b, &x, 4);
  return x != x ? (uint16_t)0x7FC0 : (uint16_t)((b + r) >> 16);
}
static inline float sign_(float x) { return (float)((0.f < x) - (x < 0.f)); }
static inline float maximum_(float a, float b) { return a != a ? a : (b != b ? b : (a > b ? a : b)); }
static inline float minimum_(float a, float b) { return a != a ? a : (b != b ? b : (a < b ? a : b)); }
"""

_VMAX = {"s8": "0.9921875f", "u8": "0.99609375f", "s4": "6.f", "u4": "7.f"}
#: the root a format codes (the block's scale is taken from the root of its largest value)
_ROOT = {"s8": "std::sqrt(std::sqrt({}))", "u8": "std::sqrt(std::sqrt({}))", "s4": "({})", "u4": "({})"}


def supported(kept: Storage, p: Tensor, buffers: dict[str, Tensor]) -> bool:
    """Whether :func:`kernel` covers this bucket: float32 parameters rounded to nearest, on
    the CPU, not sharded, and every stored buffer ``int8``, or every one ``int4`` (one block
    size), or every one ``bf16``."""
    if p.device.type != "cpu" or p.dtype != torch.float32 or kept.dtype != torch.float32:
        return False
    if kept.rounding != "nearest" or kept.sharded or not kept.stored:
        return False
    keys = {k for s in kept.stored for k in s.keys()}
    if set(buffers) != keys:
        return False
    if all(s.precision == "bf16" for s in kept.stored):
        return all(buffers[s.name].dtype == torch.bfloat16 for s in kept.stored)
    return all(s.coded and s.codec in _FORMATS and s.codec.block == kept.block for s in kept.stored)


# -- the update as C++ ------------------------------------------------------------------------


class Unsupported(Exception):
    """An op (or an argument) this module has no C++ for."""


def _literal(x: Any) -> str:
    if isinstance(x, bool):
        return "true" if x else "false"
    if isinstance(x, (int, float)):
        return f"((float){float(x)!r})" if x == x and abs(x) != float("inf") else ("NAN_" if x != x else ("INF" if x > 0 else "(-INF)"))
    raise Unsupported(f"argument {x!r}")


_BINARY = {
    "aten.mul.Tensor": "({a} * {b})",
    "aten.div.Tensor": "({a} / {b})",
    "aten.maximum.default": "maximum_({a}, {b})",
    "aten.minimum.default": "minimum_({a}, {b})",
    "aten.gt.Tensor": "({a} > {b})", "aten.gt.Scalar": "({a} > {b})",
    "aten.ge.Tensor": "({a} >= {b})", "aten.ge.Scalar": "({a} >= {b})",
    "aten.lt.Tensor": "({a} < {b})", "aten.lt.Scalar": "({a} < {b})",
    "aten.le.Tensor": "({a} <= {b})", "aten.le.Scalar": "({a} <= {b})",
    "aten.eq.Tensor": "({a} == {b})", "aten.eq.Scalar": "({a} == {b})",
    "aten.ne.Tensor": "({a} != {b})", "aten.ne.Scalar": "({a} != {b})",
    "aten.clamp_min.default": "maximum_({a}, {b})",
    "aten.clamp_max.default": "minimum_({a}, {b})",
}  # fmt: skip
_UNARY = {
    "aten.sqrt.default": "std::sqrt({a})",
    "aten.neg.default": "(-{a})",
    "aten.abs.default": "std::fabs({a})",
    "aten.sign.default": "sign_({a})",
    "aten.reciprocal.default": "(1.f / {a})",
}
_LIKE = {"aten.zeros_like.default": "0.f", "aten.ones_like.default": "1.f", "aten.full_like.default": ""}
_LOGICAL = {
    "aten.logical_and.default": "({} && {})", "aten.logical_or.default": "({} || {})",
    "aten.logical_not.default": "(!{})", "aten.bitwise_and.Tensor": "({} && {})",
    "aten.bitwise_or.Tensor": "({} || {})", "aten.bitwise_not.default": "(!{})",
}  # fmt: skip (on bools: the value's dtype is checked below)
_IN_PLACE = {"aten.add_.Tensor": "aten.add.Tensor", "aten.sub_.Tensor": "aten.sub.Tensor",
             "aten.mul_.Tensor": "aten.mul.Tensor", "aten.div_.Tensor": "aten.div.Tensor"}  # fmt: skip


def _statements(graph: torch.fx.Graph, inputs: list[str]) -> tuple[list[str], list[str]]:
    """C++ statements for ``graph``'s nodes (placeholders named ``inputs``: ``p``, ``g``,
    ``K`` (the packed numbers), then the buffers), and the expressions of its outputs with
    the final ``p`` first."""
    var: dict[torch.fx.Node, str] = {}
    root: dict[torch.fx.Node, torch.fx.Node] = {}  # an in-place op's result: the tensor it wrote
    lists: dict[torch.fx.Node, list[str]] = {}
    lines: list[str] = []
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    for node, name in zip(placeholders, inputs):
        var[node] = name
    p_node = placeholders[0]

    def arg(x: Any) -> str:  # a tensor's value now (an alias reads what was written last)
        return var[root.get(x, x)] if isinstance(x, torch.fx.Node) else _literal(x)

    outputs: list[str] = []
    for n in graph.nodes:
        if n.op == "placeholder":
            continue
        if n.op == "output":
            outputs = [arg(x) for x in n.args[0]]
            continue
        target = str(n.target)
        kwargs = dict(n.kwargs)
        if target == "aten.unbind.int" and n.args[0] is placeholders[2] and n.args[1:] in ((), (0,)):
            lists[n] = [f"k{i}" for i in range(len(n.meta["val"]))]
            continue
        if target == "<built-in function getitem>" and n.args[0] in lists:
            var[n] = lists[n.args[0]][n.args[1]]
            continue
        if target == "aten.copy_.default" and not kwargs:
            dst, src = n.args
            root[n] = root.get(dst, dst)
            var[root[n]] = arg(src)
            continue
        mutated = None
        if target in _IN_PLACE:
            mutated, target = n.args[0], _IN_PLACE[target]
        if target in ("aten.add.Tensor", "aten.sub.Tensor"):
            alpha = kwargs.pop("alpha", 1)
            b = arg(n.args[1]) if alpha == 1 else f"({_literal(alpha)} * {arg(n.args[1])})"
            expr = f"({arg(n.args[0])} {'+' if target == 'aten.add.Tensor' else '-'} {b})"
        elif target == "aten.rsub.Scalar":
            alpha = kwargs.pop("alpha", 1)
            a = arg(n.args[0]) if alpha == 1 else f"({_literal(alpha)} * {arg(n.args[0])})"
            expr = f"({arg(n.args[1])} - {a})"
        elif target in _BINARY and len(n.args) == 2:
            expr = _BINARY[target].format(a=arg(n.args[0]), b=arg(n.args[1]))
        elif target in _UNARY and len(n.args) == 1:
            expr = _UNARY[target].format(a=arg(n.args[0]))
        elif target == "aten.where.self":
            expr = f"({arg(n.args[0])} ? {arg(n.args[1])} : {arg(n.args[2])})"
        elif target in ("aten.pow.Tensor_Scalar", "aten.square.default") and n.args[1:] in ((2,), ()):
            a = arg(n.args[0])
            expr = f"({a} * {a})"
        elif target in _LIKE:  # a constant tensor like another (its dtype: checked below)
            for k in ("dtype", "layout", "device", "pin_memory", "memory_format"):
                kwargs.pop(k, None)
            expr = _literal(n.args[1]) if target == "aten.full_like.default" else _LIKE[target]
        elif target in _LOGICAL:
            expr = _LOGICAL[target].format(*map(arg, n.args))
        else:
            raise Unsupported(target)
        if kwargs:
            raise Unsupported(f"{target} with {kwargs}")
        val = n.meta.get("val")
        if not isinstance(val, Tensor) or val.dtype not in (torch.float32, torch.bool):
            raise Unsupported(f"{target} giving {getattr(val, 'dtype', val)}")
        kind = "bool" if val.dtype == torch.bool else "float"
        name = f"v{len(lines)}"
        lines.append(f"const {kind} {name} = {expr};")
        var[n] = name
        if mutated is not None:
            root[n] = root.get(mutated, mutated)
            var[root[n]] = name
    return lines, [var[p_node], *outputs]


def _trace(rules: Rules, names: tuple[str, ...], value_names: tuple[str, ...], maximize: bool, decays: bool,
           buffer_names: tuple[str, ...]) -> tuple[torch.fx.Graph, tuple[str, ...]]:  # fmt: skip
    """The update of 1-D float32 tensors ``(p, g, packed, *buffers)``, traced; and which of
    the buffers it updates (the outputs, in that order)."""
    from torch.fx.experimental.proxy_tensor import make_fx

    from .kernels import PARTS, STEP_SCALARS, rebuild

    updated: list[tuple[str, ...]] = []

    def fn(p: Tensor, g: Tensor, packed: Tensor, *buffers: Tensor) -> tuple[Tensor, ...]:
        x = dict(zip(names, packed.unbind(0)))
        parts = {part: rebuild(getattr(rules, part), part, x) for part in PARTS}
        now = dataclasses.replace(rules, **parts)  # type: ignore[arg-type]
        s = Scalars(**{f: x[f] for f in STEP_SCALARS}, values=tuple((v, x[v]) for v in value_names))
        new = update(p, g, dict(zip(buffer_names, buffers)), now, s, maximize=maximize, decays=decays)
        if not set(new) <= set(buffer_names):
            raise Unsupported(f"buffers born in the update: {sorted(set(new) - set(buffer_names))}")
        updated.append(tuple(k for k in buffer_names if k in new))
        return tuple(new[k] for k in updated[-1])

    n = 1024
    examples = [torch.randn(n), torch.randn(n), torch.rand(len(names)) + 0.5, *(torch.rand(n) for _ in buffer_names)]
    graph = make_fx(fn, tracing_mode="symbolic")(*examples).graph
    return graph, updated[-1]


def _update(rules: Rules, names: tuple[str, ...], value_names: tuple[str, ...], maximize: bool, decays: bool,
            kept: Storage) -> tuple[tuple[str, ...], list[str], str, dict[str, str], dict[int, int]]:  # fmt: skip
    """The update's C++ for a kernel over ``kept``'s buffers (``b0``, ``b1`` … in the order
    of their names): the buffers' names, the statements, the new ``p``'s expression, each
    updated buffer's, and the random stream of each buffer that rounds stochastically (its
    place in the storage: :meth:`.storage.Storage.write`'s)."""
    buffer_names = tuple(sorted(kept.by_name))
    graph, updated = _trace(rules, names, value_names, maximize, decays, buffer_names)
    lines, outs = _statements(graph, ["p_", "g_", "K", *(f"b{j}" for j in range(len(buffer_names)))])
    stored = [kept.by_name[b] for b in buffer_names]
    streams = {j: 1 + kept.stored.index(s) for j, s in enumerate(stored) if s.stochastic}
    return buffer_names, lines, outs[0], dict(zip(updated, outs[1:])), streams


def source(rules: Rules, names: tuple[str, ...], value_names: tuple[str, ...], maximize: bool, decays: bool,
           kept: Storage) -> tuple[str, tuple[str, ...]]:  # fmt: skip
    """The C++ of the block kernel, and the rule buffers it reads, in the order of its
    codes and scales arguments."""
    B, half = kept.block, kept.block // 2
    buffer_names, lines, new_p, new, streams = _update(rules, names, value_names, maximize, decays, kept)
    kinds = [_FORMATS[kept.by_name[b].codec] for b in buffer_names]
    out = [j for j, b in enumerate(buffer_names) if b in new]

    def decode(j: int) -> str:
        k = kinds[j]
        if k.endswith("8"):
            return f"    #pragma omp simd\n    for (int i = 0; i < {B}; ++i) x{j}[i] = decode_{k}(c{j}[i], s{j});"
        return (
            f"    #pragma omp simd\n    for (int i = 0; i < {half}; ++i) {{ const int c = c{j}[i];"
            f" x{j}[i] = decode_{k}(c & 15, s{j}); x{j}[i + {half}] = decode_{k}(c >> 4, s{j}); }}"
        )

    # the hashes written (two streams share one), each computed once a block into h<k>[]
    hashes = sorted({(streams[j] + 1) // 2 for j in out if j in streams})

    def noise(j: int, at: str) -> str:
        if j not in streams:
            return "0.f"
        h = f"h{(streams[j] + 1) // 2}[{at}]"
        bits = f"({h} >> 16)" if streams[j] % 2 == 1 else f"({h} & 0xFFFFu)"
        return f"(float)(int){bits} * 1.52587890625e-05f"

    def encode(j: int) -> str:
        k = kinds[j]
        scale = (
            f"    {{ const float d = scale_of({_ROOT[k].format(f'm{j}')}, {_VMAX[k]});"
            f" const float inv = 1.f / std::max(d, TINY); S[{j}][b] = d;\n"
        )
        if k.endswith("8"):
            return scale + f"      #pragma omp simd\n      for (int i = 0; i < {B}; ++i) c{j}[i] = (uint8_t)encode_{k}(y{j}[i], inv, 0.f); }}"
        return scale + (
            f"      #pragma omp simd\n      for (int i = 0; i < {half}; ++i) c{j}[i] = (uint8_t)(encode_{k}(y{j}[i], inv, {noise(j, 'i')})"
            f" | (encode_{k}(y{j}[i + {half}], inv, {noise(j, f'i + {half}')}) << 4)); }}"
        )

    body = "\n".join(f"        {line}" for line in lines)
    pointers = " ".join(
        f"uint8_t* c{j} = C[{j}] + b * {B if kinds[j].endswith('8') else half}; const float s{j} = S[{j}][b];"
        for j in range(len(kinds))
    )
    numbers = " ".join(f"const float k{i} = K[{i}];" for i in range(len(names)))
    keys = " ".join(f"const uint32_t key{h} = stream_key(I[0], I[1], {h});" for h in hashes)
    hashing = "\n".join(
        f"    uint32_t h{h}[{B}];\n    #pragma omp simd\n"
        f"    for (int i = 0; i < {B}; ++i) h{h}[i] = mix32((uint32_t)(o + i + low) ^ key{h});"
        for h in hashes
    )
    keep = "\n".join(
        f"        {{ const float y = MASKED({new[buffer_names[j]]}); y{j}[i] = y;"
        f" const float a = {'std::fabs(y)' if kinds[j].startswith('s') else '(y < 0.f ? 0.f : y)'};"
        f" m{j} = std::max(m{j}, a < INF ? a : 0.f); }}"
        for j in out
    )
    arrays = " ".join(f"float x{j}[{B}];" for j in range(len(kinds))) + " " + " ".join(f"float y{j}[{B}]; float m{j} = 0.f;" for j in out)
    reduction = f" reduction(max: {', '.join(f'm{j}' for j in out)})" if out else ""
    loop = f"""      #pragma omp simd{reduction}
      for (int i = 0; i < {B}; ++i) {{
        const float p_ = pb[i], g_ = gb[i];
        {" ".join(f"const float b{j} = x{j}[i];" for j in range(len(kinds)))}
{body}
        pb[i] = {new_p};
{keep}
      }}"""
    kernel = f"""
extern "C" void momenta_block_step(float* P, const float* G, const float* K, uint8_t** C, float** S,
                                   const int64_t* I, int64_t rows, int threads) {{
  {numbers}
  const int64_t valid = I[2]; const uint32_t low = (uint32_t)I[1];
  {keys}
  #pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t b = 0; b < rows; ++b) {{
    const int64_t o = b * {B}, lim = valid - o;
    float* pb = P + o; const float* gb = G + o;
    {pointers}
    {arrays}
{chr(10).join(decode(j) for j in range(len(kinds)))}
    if (lim >= {B}) {{  // a whole block of the parameter's
      #define MASKED(y) (y)
{loop}
      #undef MASKED
    }} else {{  // its last block, partial: the rest codes as zeros
      #define MASKED(y) (i < lim ? (y) : 0.f)
{loop}
      #undef MASKED
    }}
{hashing}
{chr(10).join(encode(j) for j in out)}
  }}
}}
"""
    return _PRELUDE + kernel, buffer_names


def elementwise_source(rules: Rules, names: tuple[str, ...], value_names: tuple[str, ...], maximize: bool,
                       decays: bool, kept: Storage) -> tuple[str, tuple[str, ...]]:  # fmt: skip
    """:func:`source` for bf16 state: no blocks, one loop over the elements, each new value
    rounded stochastically to bfloat16 (``C`` holds the bf16 buffers; ``S`` is unused)."""
    buffer_names, lines, new_p, new, streams = _update(rules, names, value_names, maximize, decays, kept)
    body = "\n".join(f"    {line}" for line in lines)

    hashes = sorted({(n + 1) // 2 for j, n in streams.items() if buffer_names[j] in new})  # two streams a hash

    def bits(j: int) -> str:
        h = f"h{(streams[j] + 1) // 2}"
        return f"({h} >> 16)" if streams[j] % 2 == 1 else f"({h} & 0xFFFFu)"

    kernel = f"""
extern "C" void momenta_block_step(float* P, const float* G, const float* K, uint8_t** C, float**,
                                   const int64_t* I, int64_t n, int threads) {{
  {" ".join(f"const float k{i} = K[{i}];" for i in range(len(names)))}
  const uint32_t low = (uint32_t)I[1];
  {" ".join(f"const uint32_t key{h} = stream_key(I[0], I[1], {h});" for h in hashes)}
  {" ".join(f"uint16_t* c{j} = (uint16_t*)C[{j}];" for j in range(len(buffer_names)))}
  #pragma omp parallel for simd schedule(static) num_threads(threads)
  for (int64_t i = 0; i < n; ++i) {{
    const float p_ = P[i], g_ = G[i];
    {" ".join(f"const float b{j} = bf16_value(c{j}[i]);" for j in range(len(buffer_names)))}
{body}
    P[i] = {new_p};
    {" ".join(f"const uint32_t h{h} = mix32((uint32_t)(i + low) ^ key{h});" for h in hashes)}
    {" ".join(f"c{j}[i] = bf16_round({new[b]}, {bits(j)});" for j, b in enumerate(buffer_names) if b in new)}
  }}
}}
"""
    return _PRELUDE + kernel, buffer_names


# -- building and calling ---------------------------------------------------------------------

_FLAGS = ("-O3", "-march=native", "-fopenmp", "-ffp-contract=off", "-fno-math-errno", "-fno-trapping-math", "-shared", "-fPIC")
_built: dict[str, Callable[..., None] | None] = {}
_lock = threading.Lock()


def _build(code: str) -> Callable[..., None] | None:
    """The compiled ``momenta_block_step`` of ``code`` (built once per source and machine,
    kept beside Inductor's cache), or ``None`` where it cannot be built."""
    # -march=native: a library is this kind of CPU's (a cache directory may be shared)
    machine = f"{platform.machine()} {torch.backends.cpu.get_cpu_capability()} {_cpu_model()}"
    key = hashlib.sha256(f"{code} {' '.join(_FLAGS)} {torch.__version__} {machine}".encode()).hexdigest()[:24]
    with _lock:
        if key in _built:
            return _built[key]
        found: Callable[..., None] | None = None
        try:
            root = compat.cache_root() / "momenta" / "blocks"
            library = root / f"{key}.so"
            if not library.is_file():
                root.mkdir(parents=True, exist_ok=True)
                src = root / f"{key}.{os.getpid()}.cpp"  # (another process may build it too)
                src.write_text(code)
                partial = src.with_suffix(".so")
                from torch._inductor.cpp_builder import get_cpp_compiler

                subprocess.run([get_cpp_compiler(), *_FLAGS, str(src), "-o", str(partial)], check=True, capture_output=True)
                partial.replace(library)
            fn = ctypes.CDLL(str(library)).momenta_block_step
            fn.restype = None
            fn.argtypes = [ctypes.c_void_p] * 6 + [ctypes.c_int64, ctypes.c_int]
            found = fn
        except (OSError, subprocess.CalledProcessError, ImportError) as error:
            text = getattr(error, "stderr", b"") or str(error).encode()
            log.warning("momenta: the block kernel did not build (%s); Inductor's kernel runs instead", text[:300])
        _built[key] = found
        return found


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            return next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), "")
    except OSError:
        return platform.processor()


class BlockKernel:
    """A built block kernel, called as a compiled graph is: ``kernel(p, g, packed, ints,
    *buffers)`` with the spans as rows of a block (:meth:`Storage.rows`) and the buffers
    in the bucket's order of keys."""

    def __init__(self, fn: Callable[..., None], order: list[int], count: int) -> None:
        self.fn, self.order, self.count = fn, order, count

    def __call__(self, p: Tensor, g: Tensor, packed: Tensor, ints: Tensor, *buffers: Tensor) -> None:
        ptrs = [buffers[i].data_ptr() for i in self.order]
        codes = (ctypes.c_void_p * self.count)(*ptrs[: self.count])
        scales = (ctypes.c_void_p * self.count)(*ptrs[self.count :])  # (none for bf16)
        self.fn(p.data_ptr(), g.data_ptr(), packed.data_ptr(), codes, scales, ints.data_ptr(), p.shape[0], torch.get_num_threads())


def kernel(rules: Rules, names: tuple[str, ...], value_names: tuple[str, ...], maximize: bool, decays: bool,
           kept: Storage, p: Tensor, g: Tensor, buffers: dict[str, Tensor], packed: Tensor) -> BlockKernel | None:  # fmt: skip
    """The block kernel of this step, or ``None`` (not :func:`supported`, an op without C++,
    or no compiler): the caller compiles with Inductor."""
    if not supported(kept, p, buffers) or packed.dtype != torch.float32:
        return None
    floats = kept.block == 1  # bf16 state: 1-D spans; coded: rows of a block
    shaped = p.dim() == g.dim() == 1 if floats else p.dim() == g.dim() == 2 and p.shape[1] == g.shape[1] == kept.block
    if not (shaped and p.is_contiguous() and g.is_contiguous()):
        return None
    try:
        make = elementwise_source if floats else source
        code, order_names = make(rules, names, value_names, maximize, decays, kept)
    except Unsupported as why:
        log.info("momenta: no block kernel (%s); Inductor's kernel runs", why)
        return None
    fn = _build(code)
    if fn is None:
        return None
    keys = list(buffers)
    by_name = {s.name: s.keys() for s in kept.stored}
    order = [keys.index(by_name[n][0]) for n in order_names]
    if not floats:
        order += [keys.index(by_name[n][1]) for n in order_names]
    return BlockKernel(fn, order, len(order_names))
