"""momenta.precision: code maps, blockwise codecs, stochastic rounding, compensated writes.

Small cases are checked exactly (tables, round trips, block boundaries, zero blocks, the first
step, non-finite values); statistics use fixed keys, so they cannot flake; the accuracy relation
against torchao and bitsandbytes is measured here, in the test, never read from elsewhere.
"""

from __future__ import annotations

import importlib
import math

import pytest
import torch

from momenta.precision import (
    Codec,
    Format,
    codec,
    compensated_read,
    compensated_write,
    random_bits,
    random_halves,
    step_key,
    stochastic_round_bf16,
)
from momenta.precision import codecs
from momenta.precision.codecs import COMPILE_OPTIONS
from momenta.precision.harness import (
    CodedState,
    adamw_scalars,
    coded_adamw_step,
    drift,
    gradient_streams,
    run_coded_adamw,
    run_torch_optimizer,
)

CODECS = [(p, s) for p in ("int8", "int4") for s in (True, False)]
IDS = [f"{p}-{'signed' if s else 'unsigned'}" for p, s in CODECS]


def blocks_of(x: torch.Tensor, block: int) -> torch.Tensor:
    return x.reshape(-1, block)


# --- code tables -----------------------------------------------------------------------------


def test_linear_table_is_absmax_quantisation():
    fmt = Format(8, signed=True, exponent=0)
    assert fmt.mantissa == 7
    assert torch.equal(fmt.table(), torch.arange(128, dtype=torch.float32) / 128)


def test_e4m3_table_is_float8_e4m3fn_times_64():
    # torch's float8_e4m3fn has the same codes, its top one (0x7f) being NaN; ours is a number
    fmt = Format(8, signed=True, exponent=4)
    fp8 = torch.arange(127, dtype=torch.uint8).view(torch.float8_e4m3fn).to(torch.float32)
    assert torch.equal(fmt.table()[:127], fp8 * 64)
    assert fmt.table()[127] == fmt.vmax == 1.875 * 2**14


def test_e4m3_codes_are_float8_casts():
    # rounding of every non-tie value agrees with torch's cast (ties: ours rounds half up)
    fmt = Format(8, signed=True, exponent=4)
    y = torch.rand(1 << 16, generator=torch.Generator().manual_seed(0)) * 448 * 64
    expected = (y / 64).to(torch.float8_e4m3fn).view(torch.uint8).to(torch.int32)
    assert torch.equal(fmt.code(y), expected)


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("exponent", [0, 1, 2, 3])
def test_every_code_round_trips_and_midpoints_round_to_nearest(bits, signed, exponent):
    fmt = Format(bits, signed, exponent)
    table = fmt.table()
    codes = torch.arange(fmt.max_code + 1, dtype=torch.int32)
    assert torch.equal(fmt.code(table), codes)
    assert bool((table[1:] > table[:-1]).all())
    # just below and above each midpoint
    mid = (table[1:] + table[:-1]) / 2
    below, above = mid * (1 - 2**-20), mid * (1 + 2**-20)
    assert torch.equal(fmt.code(below), codes[:-1])
    assert torch.equal(fmt.code(above), codes[1:])
    # beyond the largest value, and inf and NaN, saturate
    big = torch.tensor([fmt.vmax * 1.5, math.inf, math.nan])
    assert fmt.code(big).tolist() == [fmt.max_code] * 3


@pytest.mark.parametrize("bits, signed", [(8, True), (8, False), (4, True), (4, False)])
@pytest.mark.parametrize("exponent", [1, 2, 3])
def test_binades_by_comparison_are_the_bit_pattern_codes(monkeypatch, bits, signed, exponent):
    # narrow formats find the binade by comparisons (vectorised); wide ones by float32 bits
    fmt = Format(bits, signed, exponent)
    y = torch.rand(1 << 16, generator=torch.Generator().manual_seed(7)) * fmt.vmax * 1.01
    q = torch.arange(fmt.max_code + 1, dtype=torch.int32)
    by_comparison, values = fmt.code(y), fmt.value(q)
    monkeypatch.setattr(codecs, "_FEW", 0)
    # equal but at exact ties (the comparison path rounds half to even, the bits half up)
    y64 = y.double().clamp(max=fmt.vmax)
    binade = torch.where(y64 < 1, 0.0, torch.floor(torch.log2(y64.clamp(min=1))))
    steps = y64 / 2.0**binade * 2.0**fmt.mantissa
    tie = (steps - steps.floor()) == 0.5
    assert torch.equal(fmt.code(y)[~tie], by_comparison[~tie])
    assert int(tie.sum()) < 8
    assert torch.equal(fmt.value(q), values)


def test_invalid_formats_and_blocks():
    with pytest.raises(ValueError, match="bits: 6"):
        Format(6, True, 2)
    with pytest.raises(ValueError, match="exponent bits: 8"):
        Format(8, True, 8)
    with pytest.raises(ValueError, match="power: 3"):
        Format(8, True, 2, power=3)
    with pytest.raises(ValueError, match="block: 512"):
        Codec(Format(8, True, 4), 512)
    with pytest.raises(ValueError, match="block: 256"):
        Codec(Format(4, True, 2), 256)
    with pytest.raises(ValueError, match="Invalid length: 300"):
        Codec(Format(8, True, 4), 256).encode(torch.zeros(300))


def test_codec_names_the_bad_precision():
    with pytest.raises(ValueError, match="Invalid state_precision: 'int3'"):
        codec("int3", signed=True)


# --- codecs ----------------------------------------------------------------------------------


@pytest.mark.parametrize("precision, signed", CODECS, ids=IDS)
def test_layout_and_bytes(precision, signed):
    c = codec(precision, signed)
    n = 4 * c.block
    codes, scales = c.encode(torch.randn(n))
    assert codes.dtype == torch.uint8 and scales.dtype == torch.float32
    assert codes.numel() == c.codes_numel(n) == n * c.format.bits // 8
    assert scales.numel() == c.scales_numel(n) == 4
    # AdamW's two buffers: about 2 bytes a parameter in int8, about 1 in int4
    assert 2 * c.bytes_per_element() == pytest.approx(2.03125 if precision == "int8" else 1.0625)


@pytest.mark.parametrize("precision, signed", CODECS, ids=IDS)
def test_round_trip_is_exact_on_codes_and_close_on_values(precision, signed):
    c = codec(precision, signed)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(16 * c.block, generator=gen) * torch.logspace(-3, 1, 16).repeat_interleave(c.block)
    if not signed:
        x = x.abs()
    codes, scales = c.encode(x)
    x_hat = c.decode(codes, scales)
    # decoding then encoding gives back the same codes and scales, bit for bit
    codes2, scales2 = c.encode(x_hat)
    assert torch.equal(codes2, codes) and torch.equal(scales2, scales)
    # the block's largest element comes back to within float rounding
    xb, xh = blocks_of(x, c.block), blocks_of(x_hat, c.block)
    i = xb.abs().argmax(dim=1, keepdim=True)
    torch.testing.assert_close(xh.gather(1, i), xb.gather(1, i), rtol=1e-6, atol=0)
    # every element is within half a step of the table, scaled to its block (as x or as √x)
    table = c.format.table()
    step = (table[1:] - table[:-1]).max() * scales.reshape(-1, 1)
    err = (c.root(xh.abs()) - c.root(xb.abs())).abs()
    assert bool((err <= 0.5 * step * (1 + 1e-5)).all())
    assert bool((torch.sign(xh) * torch.sign(xb) >= 0).all())


@pytest.mark.parametrize("precision, signed", CODECS, ids=IDS)
def test_blocks_are_independent(precision, signed):
    c = codec(precision, signed)
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(3 * c.block, generator=gen) + 0.5
    if signed:
        x = x * torch.sign(torch.randn(3 * c.block, generator=gen))
    codes, scales = c.encode(x)
    y = x.clone()
    y[c.block : 2 * c.block] *= 1e6  # only the middle block changes
    codes_y, scales_y = c.encode(y)
    per_block = c.codes_numel(c.block)
    assert torch.equal(codes_y[:per_block], codes[:per_block])
    assert torch.equal(codes_y[2 * per_block :], codes[2 * per_block :])
    assert scales_y[0] == scales[0] and scales_y[2] == scales[2]
    assert scales_y[1] > scales[1] * 10  # (a root of 1e6 in a root map)
    # the scale is the block's largest magnitude (of √x for a root map) over vmax
    a = c.root(x.abs())
    torch.testing.assert_close(scales, blocks_of(a, c.block).amax(1) / c.format.vmax)


@pytest.mark.parametrize("precision, signed", CODECS, ids=IDS)
def test_zero_blocks_and_padding(precision, signed):
    c = codec(precision, signed)
    x = torch.zeros(3 * c.block)
    x[c.block + 5] = 3.0  # one nonzero block between zero ones (e.g. zero padding)
    codes, scales = c.encode(x)
    assert scales[0] == 0 and scales[2] == 0
    assert codes.count_nonzero() == 1
    assert torch.equal(c.decode(codes, scales), x)
    empty_codes, empty_scales = c.empty(2 * c.block)
    assert torch.equal(c.decode(empty_codes, empty_scales), torch.zeros(2 * c.block))
    # negative zero is zero (not the NaN code)
    assert torch.equal(c.encode(-x)[0] if signed else c.encode(x)[0], codes if not signed else c.encode(-x)[0])
    assert c.decode(*c.encode(torch.full((c.block,), -0.0))).eq(0).all()


@pytest.mark.parametrize("precision, signed", CODECS, ids=IDS)
def test_rows_of_blocks_and_no_rows(precision, signed):
    """encode_rows/decode_rows: rows coded on their own, equal to the flat coding of the
    same blocks; zero rows (an FSDP2 rank with an empty shard) give empty codes and scales
    of the right widths."""
    c = codec(precision, signed)
    x = torch.randn(3, 2 * c.block, generator=torch.Generator().manual_seed(0))
    if not signed:
        x = x.abs()
    codes, scales = c.encode_rows(x)
    flat_codes, flat_scales = c.encode(x.reshape(-1))
    assert torch.equal(codes.reshape(-1), flat_codes) and torch.equal(scales.reshape(-1), flat_scales)
    assert torch.equal(c.decode_rows(codes, scales), c.decode(flat_codes, flat_scales).reshape(3, -1))
    none_codes, none_scales = c.encode_rows(torch.zeros(0, 2 * c.block))
    assert none_codes.shape == (0, c.codes_numel(2 * c.block)) and none_scales.shape == (0, 2)
    assert c.decode_rows(none_codes, none_scales).shape == (0, 2 * c.block)


@pytest.mark.parametrize("precision", ["int8", "int4"])
def test_int4_nibbles_and_int8_bytes(precision):
    c = codec(precision, signed=False)
    half = c.block // 2
    x = torch.zeros(2 * c.block)
    x[c.block], x[c.block + half] = 1.0, 0.25  # second block: its max, then a smaller one
    codes, _ = c.encode(x)
    q0 = c.format.max_code
    if precision == "int4":
        # element j of a block: low nibble of the block's byte j; element j + B/2: high nibble
        assert codes.tolist() == [0] * half + [q0 | (int(codes[half]) >> 4 << 4)] + [0] * (half - 1)
        assert 0 < int(codes[half]) >> 4 < q0
    else:
        assert codes[c.block] == q0 and 0 < codes[c.block + half] < q0
        assert codes.count_nonzero() == 2


@pytest.mark.parametrize("precision", ["int8", "int4"])
def test_unsigned_never_rounds_a_positive_value_to_zero(precision):
    # V/√V read as 0 where the state was positive would divide by ε alone (the zero-point
    # problem of Li et al.): a positive value codes to at least the smallest positive code
    c = codec(precision, signed=False)
    x = torch.zeros(c.block)
    x[0], x[1], x[2] = 1.0, 1e-30, 0.0
    x_hat = c.decode(*c.encode(x))
    assert x_hat[1] > 0 and x_hat[1] >= x[1] and x_hat[2] == 0


@pytest.mark.parametrize("precision, signed", CODECS, ids=IDS)
def test_nonfinite_values_stay_in_their_element(precision, signed):
    c = codec(precision, signed)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2 * c.block, generator=gen)
    if not signed:
        x = x.abs()
    clean_codes, clean_scales = c.encode(x)
    for bad in (math.nan, math.inf, -math.inf):
        y = x.clone()
        y[7] = bad
        z = x.clone()
        z[7] = 0.0
        codes, scales = c.encode(y)
        ref_codes, ref_scales = c.encode(z)
        # the scale is the largest *finite* magnitude: the other elements code as without it
        assert torch.equal(scales, ref_scales) and bool(scales.isfinite().all())
        y_hat, z_hat = c.decode(codes, scales), c.decode(ref_codes, ref_scales)
        others = torch.arange(2 * c.block) != 7
        assert torch.equal(y_hat[others], z_hat[others])
        top = float(z_hat[: c.block].abs().max())  # the block's largest code, decoded
        if signed and math.isnan(bad):
            assert math.isnan(y_hat[7])  # only this element
        elif signed:
            assert y_hat[7] == math.copysign(top, bad)  # saturates, keeps its sign
        elif bad == -math.inf:
            assert y_hat[7] == 0  # below the non-negative range
        else:
            assert y_hat[7] == top  # NaN and +inf saturate
    assert torch.equal(c.encode(x)[0], clean_codes) and torch.equal(c.encode(x)[1], clean_scales)


def test_first_step_from_zero_state():
    # step 1 of AdamW: m = (1−β₁)g, V = (1−β₂)g², update = lr·m̂/(√V̂ + ε) ≈ lr·sign(g)
    gen = torch.Generator().manual_seed(4)
    n = 1024
    p, g = torch.randn(n, generator=gen), torch.randn(n, generator=gen)
    s = adamw_scalars(1, 1e-3, (0.9, 0.999), 1e-8, 0.0)
    for precision in ("int8", "int4"):
        cm, cv = codec(precision, True), codec(precision, False)
        m0, v0 = CodedState(*cm.empty(n)), CodedState(*cv.empty(n))
        p1, m1, v1 = coded_adamw_step(p, g, m0, v0, s, cm, cv)
        torch.testing.assert_close(cm.decode(*m1), 0.1 * g, atol=0.1 * g.abs().max() * 0.2, rtol=0.25)
        step = (p - p1) / 1e-3
        assert bool((torch.sign(step) == torch.sign(g)).all())
        tol = 0.1 if precision == "int8" else 0.6
        assert bool(((step.abs() - 1).abs() <= tol).all()), (precision, step.abs().min(), step.abs().max())


# --- compiled: decode → update → encode in one kernel --------------------------------------


def test_compiled_fused_step_matches_eager():
    cm, cv = codec("int8", True), codec("int8", False)
    n = 8 * 256

    def step_(p, g, mc, ms, vc, vs, s):
        p2, m2, v2 = coded_adamw_step(p, g, CodedState(mc, ms), CodedState(vc, vs), s, cm, cv)
        p.copy_(p2)
        mc.copy_(m2.codes)
        ms.copy_(m2.scales)
        vc.copy_(v2.codes)
        vs.copy_(v2.scales)

    compiled = torch.compile(step_, fullgraph=True, dynamic=False, options=COMPILE_OPTIONS)
    gen = torch.Generator().manual_seed(5)
    p = torch.randn(n, generator=gen)
    eager = [p.clone(), *cm.empty(n), *cv.empty(n)]
    comp = [p.clone(), *cm.empty(n), *cv.empty(n)]
    for t in range(1, 4):
        g = torch.randn(n, generator=gen) * torch.logspace(-4, 0, n)
        s = adamw_scalars(t, 1e-3, (0.9, 0.999), 1e-8, 1e-2)
        step_(eager[0], g, *eager[1:], s)
        compiled(comp[0], g, *comp[1:], s)
        for codes_e, codes_c in ((eager[1], comp[1]), (eager[3], comp[3])):
            # a fused multiply-add may move a value across a rounding boundary: one code step
            diff = (codes_e.to(torch.int32) - codes_c.to(torch.int32)).abs()
            assert int(diff.max()) <= 1 and int((diff > 0).sum()) <= n // 100
        torch.testing.assert_close(comp[2], eager[2], rtol=1e-6, atol=0)
        torch.testing.assert_close(comp[4], eager[4], rtol=1e-6, atol=0)
        torch.testing.assert_close(comp[0], eager[0], rtol=0, atol=1e-3 * 0.1)
        eager = [t_.clone() for t_ in comp]  # compare one step at a time


def test_compiled_stochastic_rounding_is_eagers_bit_for_bit():
    def sr(x, key, offset):
        return stochastic_round_bf16(x, key, offset)

    compiled = torch.compile(sr, fullgraph=True, dynamic=False)
    x = torch.randn(4096, generator=torch.Generator().manual_seed(6))
    for step in (1, 2):
        key = step_key(123, torch.tensor(step))
        assert torch.equal(compiled(x, key, torch.tensor(4096)), sr(x, key, 4096))


# --- accuracy: AdamW with coded states against torchao and bitsandbytes --------------------


LIBRARIES = [
    ("int8", "torchao.optim", "AdamW8bit"),
    ("int4", "torchao.optim", "AdamW4bit"),
    ("int8", "bitsandbytes.optim", "AdamW8bit"),
]


def library_optimizer(module: str, name: str) -> type:
    """The library's class, imported only here (a missing library, or one that does not work
    with this torch, skips its case)."""
    try:
        return getattr(importlib.import_module(module), name)
    except Exception as error:  # noqa: BLE001 - not installed, or built for another torch
        pytest.skip(f"{module}.{name} does not import: {error}")


@pytest.fixture(scope="module")
def stream():
    # one weight shape (one torchao compile), 4096 elements each (what the libraries quantise)
    p0, grads = gradient_streams("mlp", 60, widths=(64, 64, 64, 64))
    reference = run_coded_adamw(p0, grads, None, None)
    return p0, grads, reference


def test_fp32_harness_is_torch_adamw(stream):
    p0, grads, reference = stream
    torch_final = run_torch_optimizer(p0, grads, lambda ps: torch.optim.AdamW(ps, lr=1e-3))
    assert drift(reference, torch_final, p0) < 1e-4


@pytest.mark.parametrize("precision, module, name", LIBRARIES, ids=[f"{m}.{n}" for _, m, n in LIBRARIES])
def test_no_further_from_fp32_than_the_libraries(stream, precision, module, name):
    cls = library_optimizer(module, name)
    p0, grads, reference = stream
    theirs = drift(run_torch_optimizer(p0, grads, lambda ps: cls(ps, lr=1e-3)), reference, p0)
    ours = drift(run_coded_adamw(p0, grads, codec(precision, True), codec(precision, False)), reference, p0)
    assert ours <= theirs, (precision, name, ours, theirs)


# --- stochastic rounding ---------------------------------------------------------------------


def test_keys_and_bits_are_functions_of_seed_step_index():
    assert torch.equal(step_key(7, 3), step_key(torch.tensor(7), torch.tensor(3)))
    assert step_key(7, 3) != step_key(7, 4) and step_key(7, 3) != step_key(8, 3)
    assert step_key(2**64 - 1, 0) == step_key(-1, 0)  # a generator's unsigned seed
    key = step_key(7, 3)
    bits = random_bits(key, 1000)
    assert torch.equal(bits, random_bits(step_key(7, 3), 1000))
    # element i's bits do not depend on how elements are split into calls (resumable, shards)
    assert torch.equal(random_bits(key, 600, offset=400), bits[400:])
    assert int(bits.min()) >= 0 and int(bits.max()) < 2**32
    # 2⁶⁴ index space: the high half of the index counts
    assert not torch.equal(random_bits(key, 8, offset=2**32), random_bits(key, 8))


def test_random_bits_look_uniform():
    bits = random_bits(step_key(0, 1), 1 << 18)
    for shift in (0, 8, 16, 24, 31):
        ones = ((bits >> shift) & 1).to(torch.float64).mean()
        assert abs(float(ones) - 0.5) < 6 * 0.5 / 2**9  # six standard deviations
    top = (bits >> 16).to(torch.float64) / 2**16
    assert abs(float(top.mean()) - 0.5) < 6 * (1 / 12) ** 0.5 / 2**9
    # neighbouring elements are not correlated
    u = top - 0.5
    assert abs(float((u[1:] * u[:-1]).mean())) < 6 * (1 / 12) / 2**9


def test_random_halves_pair_streams_on_one_hash_and_look_independent():
    key, n = step_key(3, 9), 1 << 18
    h = random_bits(key, n, 5, 1)
    assert torch.equal(random_halves(key, n, 5, 1), h >> 16)  # streams 1 and 2: one hash
    assert torch.equal(random_halves(key, n, 5, 2), h & 0xFFFF)
    assert torch.equal(random_halves(key, n, 5, 0), random_bits(key, n, 5, 0) & 0xFFFF)
    assert torch.equal(random_halves(key, n, 5, 3), random_bits(key, n, 5, 2) >> 16)
    a, b = ((random_halves(key, n, 0, s).to(torch.float64) + 0.5) / 2**16 - 0.5 for s in (1, 2))
    for u in (a, b):
        assert abs(float(u.mean())) < 6 * (1 / 12) ** 0.5 / 2**9
    assert abs(float((a * b).mean())) < 6 * (1 / 12) / 2**9  # the halves are not correlated


def test_stochastic_rounding_is_unbiased():
    # 64 values spread over a bf16 ulp, each rounded 16384 times (different indices)
    base = torch.tensor(1.5)
    ulp = 2.0**-7 * 1.0
    fractions = torch.arange(64, dtype=torch.float32) / 64
    x = (base + fractions * ulp).repeat_interleave(16384)
    x = torch.cat([x, -x])
    r = stochastic_round_bf16(x, step_key(11, 5)).to(torch.float64)
    lo = torch.cat([base.expand(64 * 16384), -base.expand(64 * 16384)]).to(torch.float64)
    assert bool(((r - lo).abs() <= ulp).all())  # one of the two neighbours
    mean = r.reshape(128, 16384).mean(1)
    sigma = ulp * 0.5 / 16384**0.5
    assert bool(((mean - x.reshape(128, 16384)[:, 0].double()).abs() < 6 * sigma).all())
    # exactly representable values never move
    exact = torch.randn(4096).to(torch.bfloat16).to(torch.float32)
    assert torch.equal(stochastic_round_bf16(exact, step_key(1, 1)).to(torch.float32), exact)


def test_stochastic_rounding_passes_nonfinite_values():
    x = torch.tensor([math.inf, -math.inf, math.nan, 0.0, -0.0])
    r = stochastic_round_bf16(x, step_key(0, 0)).to(torch.float32)
    assert r[0] == math.inf and r[1] == -math.inf and math.isnan(r[2]) and r[3] == 0 and r[4] == 0


def test_bf16_ema_moves_with_stochastic_rounding_and_stalls_to_nearest():
    # v ← 0.999·v + 0.001·1: increments far below half a bf16 ulp once v nears 1/4
    n, steps = 4096, 3000
    exact = 1 - 0.999**steps
    v_sr = torch.zeros(n, dtype=torch.bfloat16)
    v_rn = torch.zeros(n, dtype=torch.bfloat16)
    for t in range(steps):
        v_sr = stochastic_round_bf16(0.999 * v_sr.float() + 0.001, step_key(0, t))
        v_rn = (0.999 * v_rn.float() + 0.001).to(torch.bfloat16)
    assert abs(float(v_sr.float().mean()) - exact) < 0.005
    assert float(v_rn.float().max()) < 0.3  # stalled


def test_compensated_updates_keep_tiny_increments():
    w0 = torch.ones(256)
    p_rn = w0.to(torch.bfloat16)
    p, c = compensated_write(w0)
    exact = w0.double()
    for t in range(2000):
        inc = torch.full((256,), 1e-4) * (1 + t % 3)
        p, c = compensated_write(compensated_read(p, c) + inc)
        p_rn = (p_rn.float() + inc).to(torch.bfloat16)
        exact += inc.double()
    assert torch.equal(p_rn.float(), w0)  # round-to-nearest never moves
    err = (compensated_read(p, c).double() - exact).abs().max()
    moved = float(exact[0]) - 1
    # each write rounds c (|c| ≤ half an ulp of p) to 8 bits: at most 2⁻⁹·2⁻⁸ a step, 0.015
    # in 2000; round-to-nearest loses all 0.4
    assert float(err) < 0.01 * moved
    # what the pair holds: p is w rounded to nearest, c the remainder rounded
    w = torch.randn(1000)
    p, c = compensated_write(w)
    assert torch.equal(p, w.to(torch.bfloat16))
    assert bool(((compensated_read(p, c) - w).abs() <= w.abs() * 2.0**-16).all())


def test_round_bf16_is_torchs_cast_and_survives_compilation():
    """The compensation's rounding is integer math on the bits: the same as torch's cast to
    bfloat16 (ties to even, inf, NaN, the largest values, subnormals), and compiled it still
    leaves ``w − round(w)`` (Inductor drops a cast to bfloat16 and back)."""
    from momenta.precision.rounding import round_bf16

    g = torch.Generator().manual_seed(0)
    x = torch.randn(100_000, generator=g) * 10.0 ** torch.randint(-30, 30, (100_000,), generator=g).float()
    edges = torch.tensor([float("inf"), -float("inf"), float("nan"), 3.3895314e38, 0.0, -0.0, 1e-40, 1.00390625, 1.01171875])
    x = torch.cat([x, edges])
    a, b = round_bf16(x), x.to(torch.bfloat16).float()
    assert torch.equal(a.isnan(), b.isnan()) and torch.equal(a[~a.isnan()], b[~b.isnan()])
    w = torch.randn(4096, generator=g) + 4
    compiled = torch.compile(compensated_write, dynamic=True)
    p, c = compiled(w)
    assert c.abs().max() > 0
    assert torch.equal(p, compensated_write(w)[0]) and torch.equal(c, compensated_write(w)[1])
