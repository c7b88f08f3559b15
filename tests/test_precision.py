"""momenta.precision: stochastic rounding to bfloat16, compensated writes.

Statistics use fixed keys, so they cannot flake.
"""

from __future__ import annotations

import math

import torch

from momenta.precision import (
    compensated_read,
    compensated_write,
    random_bits,
    step_key,
    stochastic_round_bf16,
)


def test_compiled_stochastic_rounding_is_eagers_bit_for_bit():
    def sr(x, key, offset):
        return stochastic_round_bf16(x, key, offset)

    compiled = torch.compile(sr, fullgraph=True, dynamic=False)
    x = torch.randn(4096, generator=torch.Generator().manual_seed(6))
    for step in (1, 2):
        key = step_key(123, torch.tensor(step))
        assert torch.equal(compiled(x, key, torch.tensor(4096)), sr(x, key, 4096))


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
