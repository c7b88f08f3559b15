"""Property-based tests over random rule compositions, hyperparameters, shapes and dtypes:
no crash, finite results for finite inputs, fast path == reference path, and a state_dict
round trip (through torch.save / torch.load(weights_only=True)) that is the identity."""

from __future__ import annotations

import io

import torch
from helpers import assert_states_close, only_path
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import momenta
from momenta import Rules
from momenta.rules import EMA, AMSGrad, EMASq, Gradient, Momentum, One, SumSq

beta = st.floats(0.0, 0.999)

first_rules = st.one_of(
    st.just(Gradient()),
    st.builds(EMA, beta, st.booleans()),
    st.builds(Momentum, st.floats(0.0, 0.99), st.floats(0.0, 0.5), st.just(False)),
    st.builds(Momentum, st.floats(0.01, 0.99), st.just(0.0), st.just(True)),
)
second_rules = st.one_of(
    st.just(One()),
    st.builds(SumSq, st.floats(0.0, 1.0), st.floats(0.0, 0.5)),
    st.builds(EMASq, beta, st.booleans(), st.booleans()),
    st.builds(AMSGrad, st.builds(EMASq, beta, st.booleans())),
)


@st.composite
def compositions(draw):
    rules = Rules(
        draw(first_rules),
        draw(second_rules),
        precondition=draw(st.sampled_from(["moment", "gradient"])),
        weight_decay=draw(st.sampled_from(["coupled", "decoupled"])),
        eps=draw(st.sampled_from(["outside", "inside"])),
        zero_over_zero=draw(st.booleans()),
    )
    hyper = dict(
        lr=draw(st.floats(1e-4, 0.5)),
        eps=draw(st.floats(1e-8, 1e-2)),
        weight_decay=draw(st.sampled_from([0.0, 0.01, 0.1])),
        maximize=draw(st.booleans()),
    )
    shapes = draw(st.lists(st.lists(st.integers(0, 4), max_size=3).map(tuple), min_size=1, max_size=4))
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    steps = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**16))
    return rules, hyper, shapes, dtype, steps, seed


def _run(case, foreach):
    """The case's training, every step on the path ``foreach`` names (``False``: the
    reference path; ``None``: flat buffers), else AssertionError."""
    rules, hyper, shapes, dtype, steps, seed = case
    g = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(s, generator=g, dtype=dtype)) for s in shapes]
    opt = momenta.Composed(params, rules, foreach=foreach, **hyper)
    with only_path("reference" if foreach is False else "flat"):
        for _ in range(steps):
            for p in params:
                p.grad = torch.randn(p.shape, generator=g, dtype=dtype)
            opt.step()
    return params, opt


SETTINGS = settings(max_examples=int(__import__("os").environ.get("MOMENTA_FUZZ_EXAMPLES", "60")), deadline=None, derandomize=__import__("os").environ.get("MOMENTA_FUZZ_EXAMPLES") is None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(compositions())
def test_finite_and_fast_equals_reference(case):
    ref_params, ref_opt = _run(case, foreach=False)
    fast_params, fast_opt = _run(case, foreach=None)
    dtype = case[3]
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-6)
    for a, b in zip(ref_params, fast_params):
        assert torch.isfinite(a).all() and torch.isfinite(b).all()
        torch.testing.assert_close(b.detach(), a.detach(), **tol)
    assert_states_close(fast_opt.state_dict()["state"], ref_opt.state_dict()["state"], **tol)


@SETTINGS
@given(compositions())
def test_state_dict_round_trip_is_the_identity(case):
    params, opt = _run(case, foreach=None)
    saved = opt.state_dict()
    buffer = io.BytesIO()
    torch.save(saved, buffer)
    buffer.seek(0)
    fresh = momenta.Composed(params, case[0], **case[1])
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    again = fresh.state_dict()
    assert again["param_groups"] == saved["param_groups"]
    assert_states_close(again["state"], saved["state"])
