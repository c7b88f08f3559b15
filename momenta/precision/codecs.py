"""Blockwise codes for optimizer state: 8 or 4 bits an element, one float32 scale a block.

A flat float tensor ``x`` (length a multiple of the block ``B``) is cut into blocks of ``B``
elements. In each block ``b``, with ``a = |x|^(1/p)`` (``p`` the map's power: 1, 2 or 4)::

    d_b   = max_{i ∈ b, a_i finite} a_i / v_max             (the block's scale, float32)
    q_i   = the nearest code to a_i / d_b in the map's table  (its sign in a bit of its own)
    x̂_i   = sign_i · (table[q_i] · d_b)^p

The table is a small floating-point format with ``E`` exponent bits and ``M`` mantissa bits,
whose smallest normal number is 1: codes below ``2^M`` are linear (``q · 2^-M``) and code
``q = e·2^M + f`` with ``e ≥ 1`` is ``(1 + f/2^M) · 2^(e−1)``. ``E = 0`` is the linear
(absmax) map; ``E = 4, M = 3`` is float8 e4m3 times 64. Encoding is arithmetic, never a
search: ``round(a/d · 2^M)`` for a linear map, and otherwise the float32 bit pattern of
``a/d`` rounded to ``M`` mantissa bits by one integer add and shift (a carry moves it to the
next binade). The roots are square roots; the block max is taken before them (they are
monotone), so the reduction pass takes none, and an unsigned codec's ``√x`` is the update's
``√V``, computed once. On the CPU the engine's block kernels (:mod:`momenta.engine.blocks`)
decode, update and encode a block in one pass, with these codecs written out in C++ in the
same order of operations; elsewhere (and where those kernels do not apply) Inductor compiles
decode → update → encode (with :data:`COMPILE_OPTIONS`, on rows of blocks:
:meth:`Codec.encode_rows`) to two vectorised loops over the blocks: their maxima, then their
codes.

The maps chosen, by measurement (issue 14's measure: AdamW's final distance from float32
AdamW on the same gradients, relative to how far float32 moved; 200 steps of two seeded
streams, ``mlp`` recorded from a small MLP and ``wide`` with scales over five decades inside a
block; ``benchmarks/bench_lowbit_accuracy.py --candidates`` prints every candidate):

| precision | ``m``-like (signed) | ``V``-like (unsigned) | block | drift ``mlp`` | drift ``wide`` |
|---|---|---|---|---|---|
| ``int8`` | linear 7 bits of ``∜|x|`` + sign | linear 8 bits of ``∜x`` | 256 | 0.0165 | 0.375 |
| bitsandbytes ``AdamW8bit`` | dynamic tree map | dynamic tree map | 256 | 0.0192 | 0.654 |
| torchao ``AdamW8bit`` | dynamic tree map | dynamic tree map | 256 | 0.0292 | 1.1e4 (diverged) |
| ``int4`` | ``E2M1`` of ``x`` + sign | ``E2M2`` of ``x`` | 128 | 0.184 | 0.877 |
| torchao ``AdamW4bit`` | dynamic exponent map | linear without zero | 128 | 0.239 | 0.889 |

Why. Adam's step ``m/√V`` is scale-free, so a small element moves as far as a large one, and
a block needs both precision near its largest values (``mlp``) and range down several decades
(``wide``). Float-like codes (``E3M4``, ``E4M3``, ``E4M4`` of ``√V``) give range but 3–4
mantissa bits at the top: 0.025–0.05 on ``mlp``, worse than bitsandbytes. Linear codes give
precision but no range (``wide`` 0.6–1.3). A power map, linear in ``|x|^(1/4)``, has both:
its step is ``4/127`` of the value at the top and it reaches ``127⁻⁴ ≈ 4·10⁻⁹`` of the block's
largest value; each buffer alone is the best or near the best on both streams (``m`` only:
0.0143, 0.055; ``V`` only: 0.0083, 0.358), and it is the cheapest to encode (two square roots,
a multiply, a round). At 4 bits there is no room for a root's range: ``E2M1``/``E2M2`` of ``x``
were best on ``mlp`` and still ahead of torchao on ``wide``.

The zero point (Li et al.). A ``V`` read back as 0 where it was positive makes the step
``m/ε``. Before unsigned codecs had a floor, 14 of the 15 ``V`` maps measured diverged on at
least one stream (drift 12 to 10⁶; all but ``E5M3`` of ``√V``; linear ``V``: 386 on ``mlp``);
with positive values coded to at least the smallest positive code, none does (linear ``V``:
0.0132). ``V`` is never under-read to 0, so no step is larger than the true one by more than
the coding error.

Non-finite values. The scale is the largest *finite* magnitude of the block, so one NaN or
inf never changes how the other elements of its block are coded. ``±inf`` saturates to the
largest code of its sign. A NaN in a signed buffer is kept, for that element only: the code
"sign bit set, magnitude 0" (a redundant −0) is NaN and decodes to NaN — as in float32, where
a NaN in ``m`` stays in its element. An unsigned buffer has no spare code: a NaN (like
``+inf``) saturates to the block's largest value, and a negative value (or ``−inf``) reads
back as 0.

Layout. ``codes`` is a ``uint8`` tensor of ``n`` bytes (8 bits) or ``n/2`` (4 bits: element
``j`` of a block in the low nibble of the block's byte ``j``, element ``j + B/2`` in the high
nibble, so both halves stay contiguous and vectorise); ``scales`` is a float32 tensor of
``n/B`` elements. The engine pads each region (a parameter, or a rank's shard of one) to a
block multiple, so a block belongs to one parameter and one rank. Zero padding codes to 0 and
does not change a block's scale.

Sources: Dettmers, Lewis, Shleifer & Zettlemoyer, "8-bit Optimizers via Block-wise
Quantization", ICLR 2022 (blockwise absmax scales, the dynamic tree map; bitsandbytes);
Li, Chen & Zhu, "Memory Efficient Optimizers with 4-bit States", NeurIPS 2023 (block 128, the
zero-point problem of the second moment); torchao's ``torchao.optim`` (``AdamW8bit``,
``AdamW4bit``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

COMPILE_OPTIONS: dict[str, str | int | bool | Callable[..., Any]] = {
    "realize_reads_threshold": 64,
    "realize_acc_reads_threshold": 64,
    "realize_opcount_threshold": 1024,
}
"""Inductor options for a kernel that decodes, updates and encodes (``torch.compile(...,
options=COMPILE_OPTIONS)``). With Inductor's defaults the decoded-and-updated float32 buffers
(read by the block max, the update and the encode) are written to memory and read back, two
float32 passes that cost more than the whole float32 step; with these they are recomputed
instead: the kernel is two loops over the blocks, their maxima and their codes, each decoding
and updating (measured: 2.3× faster for int8 on 16M elements, two threads, a busy machine)."""

_FEW = 3
"""Formats with at most this many exponent bits find the binade by comparisons (vectorised by
Inductor); wider ones read float32 bit patterns (``Tensor.view(torch.int32)``), which
Inductor's CPU backend does not vectorise."""

_TINY = 2.0**-126
"""Smallest float32 normal: a block scale is at least this (unless the block is all zero), so
its reciprocal is finite."""


@dataclass(frozen=True)
class Format:
    """A table of code values: ``E`` exponent bits, ``M = bits − sign − E`` mantissa bits.

    Code ``q`` (magnitude) is ``q · 2^-M`` for ``q < 2^M`` and ``(1 + f/2^M) · 2^(e−1)`` for
    ``q = e·2^M + f``, ``e ≥ 1``; a signed format adds a sign bit on top (sign-magnitude; the
    pattern "sign set, magnitude 0" is NaN). With ``power=p`` the table codes ``|x|^(1/p)``.

    Args:
        bits: bits a code, 8 or 4.
        signed: a sign bit (for buffers of either sign), or none (non-negative buffers).
        exponent: ``E``, exponent bits; 0 is the linear (absmax) map.
        power: ``p``: 1 codes ``|x|``, 2 ``√|x|``, 4 ``∜|x|`` (decode squares once or twice).
    """

    bits: int
    signed: bool
    exponent: int
    power: int = 1

    def __post_init__(self) -> None:
        if self.bits not in (4, 8):
            raise ValueError(f"Invalid bits: {self.bits} (4 or 8)")
        if not 0 <= self.exponent <= 5 or self.mantissa < 0:
            raise ValueError(f"Invalid exponent bits: {self.exponent} for {self.bits} bits")
        if self.power not in (1, 2, 4):
            raise ValueError(f"Invalid power: {self.power} (1, 2 or 4)")

    @property
    def mantissa(self) -> int:
        """``M``: the bits of a code's magnitude that are not exponent."""
        return self.bits - int(self.signed) - self.exponent

    @property
    def max_code(self) -> int:
        """The largest magnitude code, ``2^(E+M) − 1``."""
        return (1 << (self.exponent + self.mantissa)) - 1

    @property
    def vmax(self) -> float:
        """The table's largest value: ``(2 − 2^-M) · 2^(2^E − 2)``, or ``1 − 2^-M`` if linear."""
        m = self.mantissa
        if self.exponent == 0:
            return 1.0 - 2.0**-m
        return (2.0 - 2.0**-m) * 2.0 ** ((1 << self.exponent) - 2)

    @property
    def name(self) -> str:
        root = {1: "x", 2: "√x", 4: "∜x"}[self.power]
        return f"{'s' if self.signed else 'u'}E{self.exponent}M{self.mantissa}({root})"

    def table(self) -> Tensor:
        """Every magnitude code's value, float32, indexed by code (tests and documentation)."""
        return self.value(torch.arange(self.max_code + 1, dtype=torch.int32))

    def code(self, y: Tensor, noise: Tensor | None = None) -> Tensor:
        """Nearest magnitude code (int32) of ``y`` ∈ [0, vmax] (float32; larger saturates).

        With ``noise`` (uniform in [0, 1), like ``y``), the code rounds stochastically: down
        or up with the probabilities that make its expected value ``y`` (the table is linear
        between neighbouring codes), so that an average moving by less than half a step a
        step still moves."""
        m = self.mantissa

        def rnd(t: Tensor) -> Tensor:
            return torch.round(t) if noise is None else torch.floor(t + noise)

        y = torch.where(y <= self.vmax, y, self.vmax)  # inf and NaN saturate
        small = rnd(y * 2.0**m).to(torch.int32)
        if self.exponent == 0:
            return small
        if self.exponent <= _FEW:
            # y ≥ 1 in binade k (2^k ≤ y < 2^(k+1)): code (k+1)·2^M + round((y/2^k − 1)·2^M),
            # a carry (the round giving 2^M) landing on the next binade's first code
            k = torch.zeros_like(small)
            inv = torch.ones_like(y)
            for j in range(1, (1 << self.exponent) - 1):
                k = torch.where(y >= 2.0**j, j, k)
                inv = torch.where(y >= 2.0**j, 2.0**-j, inv)
            normal = ((k + 1) << m) + rnd((y * inv - 1.0) * 2.0**m).to(torch.int32)
        else:
            # the float32 pattern rounded to M mantissa bits (half up) is the code, once the
            # exponent is rebased so that 1.0 (pattern 127 << 23) is code 2^M
            shift = 23 - m
            half = (1 << (shift - 1)) if noise is None else (noise * (1 << shift)).to(torch.int32)
            normal = ((y.view(torch.int32) + half) >> shift) - (126 << m)
        return torch.where(y < 1.0, small, normal).clamp_(max=self.max_code)

    def value(self, q: Tensor) -> Tensor:
        """The table value (float32) of magnitude codes ``q`` (int32)."""
        m = self.mantissa
        small = q.to(torch.float32) * 2.0**-m
        if self.exponent == 0:
            return small
        if self.exponent <= _FEW:
            e = q >> m  # the binade's field: value (2^M + f) · 2^(e − 1 − M)
            unit = torch.full_like(small, 2.0**-m)
            for j in range(2, 1 << self.exponent):
                unit = torch.where(e == j, 2.0 ** (j - 1 - m), unit)
            normal = ((q & ((1 << m) - 1)) + (1 << m)).to(torch.float32) * unit
        else:
            normal = ((q + (126 << m)) << (23 - m)).view(torch.float32)
        return torch.where(q < (1 << m), small, normal)


@dataclass(frozen=True)
class Codec:
    """``x ↦ (codes, scales)`` and back, blockwise: a :class:`Format` and a block size.

    ``encode`` and ``decode`` are pure tensor functions with no data-dependent Python control
    flow (branches depend only on the codec's fields), so ``torch.compile`` fuses them with the
    update between them.

    Args:
        format: the code table.
        block: elements a scale; a divisor of the encoded tensor's length.
    """

    format: Format
    block: int

    def __post_init__(self) -> None:
        limit = 256 if self.format.bits == 8 else 128
        if not 2 <= self.block <= limit or self.block % 2:
            raise ValueError(f"Invalid block: {self.block} (even, at most {limit})")

    @property
    def signed(self) -> bool:
        return self.format.signed

    def codes_numel(self, n: int) -> int:
        """Bytes of codes for ``n`` elements."""
        return n * self.format.bits // 8

    def scales_numel(self, n: int) -> int:
        """Scales for ``n`` elements (``n`` a multiple of the block)."""
        return n // self.block

    def bytes_per_element(self) -> float:
        """Storage an element: its code and its share of a float32 scale."""
        return self.format.bits / 8 + 4 / self.block

    def empty(self, n: int, device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
        """Codes and scales of ``n`` zeros (code 0 is 0 in every format)."""
        self._check(n)
        return (
            torch.zeros(self.codes_numel(n), dtype=torch.uint8, device=device),
            torch.zeros(self.scales_numel(n), dtype=torch.float32, device=device),
        )

    def encode(self, x: Tensor, noise: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(codes, scales)`` of a flat tensor ``x`` (any float dtype; arithmetic in float32);
        ``noise`` (uniform in [0, 1), like ``x``): round the codes stochastically."""
        self._check(x.numel())
        rows = None if noise is None else noise.reshape(-1, self.block)
        codes, scales = self.encode_rows(x.reshape(-1, self.block), rows)
        return codes.reshape(-1), scales.reshape(-1)

    def decode(self, codes: Tensor, scales: Tensor) -> Tensor:
        """The float32 values of ``codes`` with their blocks' ``scales`` (flat)."""
        return self.decode_rows(codes.reshape(-1, self.codes_numel(self.block)), scales.reshape(-1, 1)).reshape(-1)

    def encode_rows(self, x: Tensor, noise: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """:meth:`encode` of rows of whole blocks, ``x`` shaped ``(rows, k·block)``: codes
        ``(rows, codes_numel(k·block))`` and scales ``(rows, k)``. The fast path's kernels
        keep this shape: every index Inductor computes is then a row times a constant plus a
        column, no division, and its loops vectorise (a flat span's did not). ``noise``: as
        :meth:`encode`'s."""
        fmt = self.format
        rows, width = x.shape
        x = x.reshape(rows, width // self.block, self.block).to(torch.float32)
        if noise is not None:
            noise = noise.reshape(x.shape)
        if fmt.signed:
            a = x.abs()
        else:
            a = torch.where(x < 0, 0.0, x)  # negatives and −inf read back as 0; NaN stays NaN
        # the roots are monotone: the root of the block's max is the max of the roots, so the
        # reduction pass takes no root (and √x here is the update's √V, computed once)
        absmax = self.root(torch.where(a < torch.inf, a, 0.0).amax(dim=2, keepdim=True))
        d = absmax / fmt.vmax
        d = torch.where(d > 0, d.clamp(min=_TINY), 0.0)
        if fmt.signed or fmt.power == 1:
            r = self.root(a)
        else:  # written from x.sqrt(), the update's √V: Inductor computes it once
            r = torch.where(x < 0, 0.0, self.root(x.sqrt(), skip=1))
        q = fmt.code(r * (1.0 / d.clamp(min=_TINY)), noise)
        if not fmt.signed:
            q = torch.where(r > 0, q.clamp(min=1), q)  # never 0 for a positive V: the zero point
        if fmt.signed:
            sign = 1 << (fmt.bits - 1)
            q = torch.where((x < 0) & (q > 0), q | sign, q)
            q = torch.where(x != x, sign, q)  # NaN (x != x vectorises; isnan does not)
        k = width // self.block  # (explicit sizes: -1 is ambiguous for zero rows, an empty shard)
        return self._pack(q).reshape(rows, self.codes_numel(width)), d.reshape(rows, k)

    def decode_rows(self, codes: Tensor, scales: Tensor) -> Tensor:
        """:meth:`decode` of rows: codes ``(rows, c)`` and scales ``(rows, k)`` (``k``
        blocks a row) give float32 values ``(rows, k·block)``."""
        fmt = self.format
        rows, k = scales.shape
        q = self._unpack(codes.reshape(rows, k, self.codes_numel(self.block)))
        if fmt.signed:
            sign = 1 << (fmt.bits - 1)
            mag = q & (sign - 1)
        else:
            mag = q
        y = fmt.value(mag) * scales.reshape(rows, k, 1)
        for _ in range(fmt.power.bit_length() - 1):
            y = y * y
        if fmt.signed:
            y = torch.where(q >= sign, -y, y)
            y = torch.where(q == sign, torch.nan, y)
        return y.reshape(rows, k * self.block)

    def root(self, a: Tensor, skip: int = 0) -> Tensor:
        """``a^(1/p)`` (``a ≥ 0``): the domain the table codes, by square roots alone."""
        for _ in range(self.format.power.bit_length() - 1 - skip):
            a = a.sqrt()
        return a

    def _pack(self, q: Tensor) -> Tensor:
        """Codes a byte, blocks along the last dimension: int8 as they are; int4 two a byte,
        element ``j`` of a block in the low nibble of the block's byte ``j`` and element
        ``j + B/2`` in its high nibble (two contiguous halves, so packing and unpacking stay
        vectorised)."""
        if self.format.bits == 8:
            return q.to(torch.uint8)
        half = self.block // 2
        return (q[..., :half] | (q[..., half:] << 4)).to(torch.uint8)

    def _unpack(self, codes: Tensor) -> Tensor:
        """Codes as int32, blocks along the last dimension (``(..., block)``)."""
        c = codes.to(torch.int32)
        if self.format.bits == 8:
            return c
        # [low halves, high halves] by a broadcast shift, not a concatenation: Inductor
        # writes a concatenation's parts to memory, a shift it fuses into the loop
        shifts = torch.arange(2, dtype=torch.int32, device=c.device).unsqueeze(-1) * 4
        return ((c.unsqueeze(-2) >> shifts) & 15).flatten(-2)

    def _check(self, n: int) -> None:
        if n % self.block:
            raise ValueError(f"Invalid length: {n} is not a multiple of the block {self.block}")


PRECISIONS: dict[str, tuple[Codec, Codec]] = {
    # precision: (signed codec, unsigned codec), chosen by measurement (see the module)
    "int8": (Codec(Format(8, True, 0, power=4), 256), Codec(Format(8, False, 0, power=4), 256)),
    "int4": (Codec(Format(4, True, 2), 128), Codec(Format(4, False, 2), 128)),
}


def codec(precision: str, signed: bool) -> Codec:
    """The codec of a state precision (``"int8"`` or ``"int4"``) for a signed or unsigned buffer.

    Args:
        precision: ``"int8"`` or ``"int4"``.
        signed: the buffer takes either sign (``m``-like); False for never-negative buffers
            (``V``-like), whose codec may code ``√x`` and never rounds a positive value to 0.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"Invalid state_precision: {precision!r} (one of {', '.join(PRECISIONS)})")
    return PRECISIONS[precision][0 if signed else 1]
