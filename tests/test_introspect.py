"""``momenta.inspect`` / ``momenta.Inspector``: the numbers equal the ones computed by hand
from ``optimizer.state``, on the fast path (flat buffers, compiled kernels) and the
reference path; which buffers are m and V comes from the rules."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

import momenta
from distributed import launch
from momenta import registry
from momenta.engine import compat, kernels
from momenta import introspect
from momenta.introspect import GRADIENT, Inspector, _median, inspect, moments


def _model(big: bool) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    n = 300 if big else 7  # 300² + 300 elements: above the compile threshold
    return [torch.randn(n, n, generator=g).requires_grad_(), torch.randn(n, generator=g).requires_grad_()]


def _loss(params: list[torch.Tensor], k: int) -> torch.Tensor:
    w, b, *rest = params
    x = torch.linspace(-1, 1, w.shape[0]) * (1 + k)
    extra = sum(((r - 0.5) ** 2).sum() for r in rest)  # rest start at 0: w = 0 there at first
    return ((w @ x + b).tanh() - 0.3).square().sum() + 0.01 * (w * w).sum() + extra


def _train(make, params, steps=3):
    opt = make(params)
    inspector = Inspector(opt)
    before = None
    for k in range(steps):
        before = [p.detach().clone() for p in params]
        opt.zero_grad()
        _loss(params, k).backward()
        opt.step()
    return opt, inspector, before


def _by_hand(opt, params, before, m_name, v_name, lr, c1, c2, eps):
    m = torch.cat([opt.state[p][m_name].double().flatten() for p in params])
    w = torch.cat([p.detach().double().flatten() for p in params])
    if v_name is None:
        root = torch.ones_like(m)
    else:
        root = torch.cat([(opt.state[p][v_name].double() / c2).sqrt().flatten() for p in params])
    ratio = (lr * m.abs() / c1 / (root + eps)) / w.abs()
    ratio = ratio[w != 0]
    delta = torch.cat([(p.detach().double() - b.double()).flatten() for p, b in zip(params, before)])
    return {
        "m_norm": m.norm().item(),
        "m_rms": (m.norm() / math.sqrt(m.numel())).item(),
        "sqrt_v_mean": root.mean().item(),
        "ratio_min": ratio.min().item(),
        "ratio_median": ratio.median().item(),
        "ratio_max": ratio.max().item(),
        "update_rms": (delta.norm() / math.sqrt(delta.numel())).item(),
    }


CASES = {
    "Adam": (
        lambda ps, **kw: momenta.Adam(ps, lr=0.01, eps=1e-8, **kw),
        "exp_avg", "exp_avg_sq", 0.01, lambda t: 1 - 0.9**t, lambda t: 1 - 0.999**t, 1e-8,
    ),
    "SGD momentum": (
        lambda ps, **kw: momenta.SGD(ps, lr=0.05, momentum=0.9, **kw),
        "momentum_buffer", None, 0.05, lambda t: 1.0, lambda t: 1.0, 0.0,
    ),
}  # fmt: skip


@pytest.mark.parametrize("path", ["fast", "reference"])
@pytest.mark.parametrize("case", list(CASES))
def test_numbers_equal_the_state_by_hand(case, path, monkeypatch):
    make, m_name, v_name, lr, c1, c2, eps = CASES[case]
    monkeypatch.setenv("TORCHINDUCTOR_COMPILE_THREADS", "1")
    params = _model(big=path == "fast")
    kwargs = {"foreach": False} if path == "reference" else {}  # foreach=False: the for-loop
    opt, inspector, before = _train(lambda ps: make(ps, **kwargs), params)
    if path == "fast":
        assert opt._compiled and sum(p.numel() for p in params) >= kernels.config.compile_min_numel
        bucket = opt._flat_groups[0].buckets[0]
        assert m_name in bucket.state.buffers  # the reading is over these flat buffers
    else:
        assert not getattr(opt, "_flat_groups", {})
    t = 3
    want = _by_hand(opt, params, before, m_name, v_name, lr, c1(t), c2(t), eps)
    sampled = inspector.read()  # 90 300 coordinates: the median of r on a strided sample
    for key in ["m_norm", "m_rms", "sqrt_v_mean", "ratio_min", "ratio_max", "update_rms"]:  # every coordinate
        assert getattr(sampled.total, key) == pytest.approx(want[key], rel=2e-5), key
    assert sampled.total.ratio_median == pytest.approx(want["ratio_median"], rel=0.05)
    monkeypatch.setattr(introspect, "SAMPLE", 10**9)  # every coordinate: equal to the state by hand
    reading = inspector.read()
    got = reading.total.as_dict()
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=2e-5), key
    assert reading.groups[0].stats == reading.total
    assert reading.groups[0].step == (t if case == "Adam" else None)  # torch's SGD counts no steps
    assert reading.total.numel == sum(p.numel() for p in params)
    # without an Inspector's hook, no last update; the rest the same
    plain = inspect(opt).total
    assert plain.update_rms is not None  # this optimizer is watched: inspect() uses the hook
    inspector.close()
    assert inspect(opt).total.update_rms is None
    assert inspect(opt).total.m_norm == pytest.approx(want["m_norm"], rel=2e-5)


def test_per_parameter_readings_add_up_to_the_group():
    params = _model(big=False) + [torch.zeros(3, requires_grad=True)]
    opt, inspector, before = _train(lambda ps: momenta.AdamW(ps, lr=0.01), params)
    opt.add_param_group({"params": [torch.zeros(4, requires_grad=True)]})  # never stepped: no state
    reading = inspector.read(per_parameter=True)
    late = reading.groups[1]
    assert late.params is not None and late.params[0] is None and late.stats.m_norm is None
    group = reading.groups[0]
    each = group.params
    assert each is not None and len(each) == 3
    assert math.sqrt(sum(s.m_norm**2 for s in each)) == pytest.approx(group.m_norm, rel=1e-6)
    assert sum(s.sqrt_v_mean * s.numel for s in each) / group.numel == pytest.approx(group.sqrt_v_mean, rel=1e-6)
    assert min(s.ratio_min for s in each) == pytest.approx(group.ratio_min)
    assert max(s.ratio_max for s in each) == pytest.approx(group.ratio_max)
    assert each[0].m_norm == pytest.approx(opt.state[params[0]]["exp_avg"].norm().item(), rel=1e-6)
    delta = (params[0].detach() - before[0]).double()
    assert each[0].update_rms == pytest.approx((delta.norm() / math.sqrt(delta.numel())).item(), rel=1e-6)
    assert sum(s.update_rms**2 * s.numel for s in each) / group.numel == pytest.approx(group.update_rms**2, rel=1e-6)
    assert reading.total.numel == group.numel  # the coordinates read: parameters with a state


def test_gradient_as_m_and_the_seed_rmsprop():
    """m = g (the seed's RMSProp): m is the gradient in p.grad; √V̂ = √V (no correction)."""
    params = _model(big=False)
    opt, inspector, _ = _train(lambda ps: momenta.seed.RMSProp(ps, lr=0.01), params)
    g = torch.cat([p.grad.flatten() for p in params])
    v = torch.cat([opt.state[p]["square_avg"].flatten() for p in params])
    reading = inspector.read().total
    assert reading.m_norm == pytest.approx(g.norm().item(), rel=1e-6)
    assert reading.sqrt_v_mean == pytest.approx(v.sqrt().mean().item(), rel=1e-6)


def test_which_buffers_are_m_and_v_comes_from_the_rules():
    expected = {
        "sgd": (GRADIENT, "1"),
        "sgdm": ("exp_avg", "1"),
        "adagrad": (GRADIENT, "sum"),
        "rmsprop": (GRADIENT, "square_avg"),
        "adam": ("exp_avg", "exp_avg_sq"),
        "adamax": ("exp_avg", "exp_inf"),
        "adadelta": (None, "square_avg"),  # Δ averages squared steps: no buffer is m
        "rprop": (None, "1"),
        "lion": ("exp_avg", "1"),
        "lamb": ("exp_avg", "exp_avg_sq"),  # through Corrected
        "yogi": ("exp_avg", "exp_avg_sq"),  # through Initialized
        "radam": ("exp_avg", "exp_avg_sq"),  # through Rectified
        "ademamix": ("exp_avg_fast", "exp_avg_sq"),
        "adafactor": (GRADIENT, None),  # factored: no V per coordinate
    }
    for name, (m, v) in expected.items():
        opt = registry.get(name).factory([torch.zeros(2, 2, requires_grad=True)], lr=0.1)
        found = moments(opt.rules(opt.param_groups[0]))
        assert (found.m, found.V) == (m, v), name
    centered = momenta.RMSprop([torch.zeros(2, requires_grad=True)], centered=True)
    assert moments(centered.rules(centered.param_groups[0])).V is None  # V = buffer − ḡ²: no buffer holds it
    amsgrad = momenta.Adam([torch.zeros(2, requires_grad=True)], amsgrad=True)
    assert moments(amsgrad.rules(amsgrad.param_groups[0])).V == "max_exp_avg_sq"  # the running max
    muon = momenta.MuonWithAdamW([torch.zeros(2, 2, requires_grad=True), torch.zeros(2, requires_grad=True)])
    assert [moments(muon.rules(g)).m for g in muon.param_groups] == ["momentum_buffer", "exp_avg"]


@pytest.mark.parametrize("name", [n for n in registry.every() if n != "sparseadam"])
def test_every_optimizer_can_be_read(name):
    params = _model(big=False)
    opt, inspector, _ = _train(lambda ps: registry.get(name).factory(ps, lr=registry.get(name).lr), params, steps=2)
    reading = inspector.read(per_parameter=True)
    total = reading.total
    assert total.update_rms is not None and total.update_rms > 0
    assert total.numel == sum(p.numel() for p in params)
    for value in total.as_dict().values():
        assert value is None or math.isfinite(value)
    assert set(reading.as_dict()) == {"total", "groups"}


def test_not_a_momenta_optimizer():
    with pytest.raises(TypeError, match="not a momenta optimizer"):
        inspect(torch.optim.Adam([torch.zeros(2, requires_grad=True)]))


def test_before_any_step_nothing_is_defined():
    opt = momenta.Adam([torch.ones(3, requires_grad=True)], lr=0.1)
    total = inspect(opt).total
    assert total.m_norm is None and total.ratio_median is None and total.update_rms is None


def test_rules_declare_their_moment_buffers():
    """The declaration is the rules' (``moment()``); wrappers pass on their inner rule's."""
    from momenta.rules import AMSGrad, EMA, EMAMix, EMASq, Factored, Gradient, One, Resilient
    from momenta.rules.first import Corrected, Delta, Initialized

    assert EMA(name="avg").moment() == "avg"
    assert Corrected(EMA(bias_correction=True)).moment() == "exp_avg"
    assert Initialized(EMA()).moment() == "exp_avg"
    assert EMAMix().moment() == "exp_avg_fast"
    assert Delta().moment() is None and Resilient().moment() is None and Gradient().moment() is None
    assert EMASq().moment() == "exp_avg_sq" and EMASq(centered=True).moment() is None
    assert AMSGrad(EMASq()).moment() == "max_exp_avg_sq"
    assert Factored().moment() is None and One().moment() is None


@pytest.mark.parametrize("path", ["C++", "torch"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n", [0, 1, 2, 7, 4096, 50_000])
def test_the_median_is_torchs_over_the_defined_entries(path, dtype, n, monkeypatch):
    """NaN entries (r not defined, or NaN) are not counted; over the rest, the lower median
    as ``torch.median`` takes it, ties, ±∞, ±0, negatives and subnormals included: by the
    C++ radix select (``native.cpp``, waited for) and by torch's ``nanmedian`` (a GPU's
    path, and the CPU's until the C++ is built)."""
    if path == "C++":
        if compat.native(wait=True) is None:
            pytest.skip("native.cpp cannot be built here (no C++ compiler or torch headers)")
    else:
        monkeypatch.setattr(compat, "native", lambda wait=False: None)
    g = torch.Generator().manual_seed(n)
    r = (torch.rand(n, generator=g, dtype=torch.float64) * 1e-3).to(dtype)
    r[::5] = r[0] if n else 0.0  # ties
    r[1::7] = math.nan  # not defined
    r[2::11] = 0.0
    if n > 20:
        r[3] = math.inf
        r[4] = torch.finfo(dtype).tiny / 4  # subnormal
        r[6], r[8], r[9] = -0.5, -math.inf, -0.0
        r[n // 2 :: 13] = r[n // 2 :: 13] * -1  # the median among negatives and positives
    kept = r[~r.isnan()]
    want = kept.median() if kept.numel() else torch.tensor(math.nan, dtype=dtype)
    got = float(_median(r))
    assert (math.isnan(got) and math.isnan(want)) or got == want.item()
    assert math.isnan(float(_median(torch.full((n,), math.nan, dtype=dtype))))


def test_a_nan_in_the_state_reads_as_nan_not_as_none():
    """A NaN gradient (no ``nonfinite`` guard) makes m and V NaN at a coordinate: its group
    reads NaN for what the NaN enters (‖m‖, mean √V̂, min, median and max of r, rms Δw), not
    ``None`` ('not defined'), and the other group reads as before."""
    g = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(100, generator=g)) for _ in range(2)]
    opt = momenta.Adam([{"params": [params[0]]}, {"params": [params[1]]}], lr=0.1)
    inspector = Inspector(opt)
    for step in range(2):
        for p in params:
            p.grad = torch.randn(100, generator=g)
        if step:
            params[1].grad[3] = math.nan
        opt.step()
    reading = inspector.read()
    clean, broken = reading.groups
    assert all(v is not None and math.isfinite(v) for v in clean.stats.as_dict().values())
    for key in ("m_norm", "sqrt_v_mean", "ratio_min", "ratio_median", "ratio_max", "update_rms"):
        assert math.isnan(getattr(broken, key)), key
        assert math.isnan(getattr(reading.total, key)), key
    per = inspector.read(per_parameter=True)
    assert per.groups[0].params[0] == clean.stats and math.isnan(per.groups[1].params[0].ratio_max)


@dataclasses.dataclass(frozen=True)
class _Clamp(momenta.rules.Direction):
    """D(d) = clamp(d, −c, c): an elementwise direction of a user's, with a hyperparameter."""

    limit: float = 0.5

    @property
    def formula(self) -> str:
        return "clamp({d})"

    def apply(self, state, d, w, t):
        return d.clamp(-self.limit, self.limit), {}


@pytest.mark.parametrize("path", ["fast", "reference"])
def test_the_step_goes_through_an_elementwise_direction(path, monkeypatch):
    """r is the step the rules make, s = lr · D(m̂/(√V̂+ε)), where the direction D is
    elementwise: Lion's sign moves every coordinate by exactly lr, so r = lr/|w| wherever
    m ≠ 0 (the generic lr·m̂/|w| would be m's); a user's clamp bounds |s| by lr·c, and a
    new c (a param-group key, as the rules' every hyperparameter) is read without
    compiling the pass again. Before a direction over whole parameters (LAMB's trust
    ratio) r is m̂/(√V̂+ε)'s."""
    monkeypatch.setenv("TORCHINDUCTOR_COMPILE_THREADS", "1")
    monkeypatch.setattr(introspect, "SAMPLE", 10**9)
    kwargs = {"foreach": False} if path == "reference" else {}
    params = _model(big=path == "fast")
    opt, _, _ = _train(lambda ps: momenta.Lion(ps, lr=0.01, weight_decay=0.1, **kwargs), params)
    m = torch.cat([opt.state[p]["exp_avg"].double().flatten() for p in params])
    w = torch.cat([p.detach().double().flatten() for p in params])
    want = (0.01 * (m != 0) / w.abs())[w != 0]
    got = inspect(opt).total
    assert got.ratio_min == pytest.approx(want.min().item(), rel=1e-6)
    assert got.ratio_median == pytest.approx(want.median().item(), rel=1e-6)
    assert got.ratio_max == pytest.approx(want.max().item(), rel=1e-6)

    rules = momenta.Rules(momenta.rules.EMA(0.9, bias_correction=True), momenta.rules.EMASq(0.99), direction=_Clamp())
    params = _model(big=path == "fast")
    opt, _, _ = _train(lambda ps: momenta.Composed(ps, rules, lr=0.01, **kwargs), params)
    assert inspect(opt).total.ratio_max * min(p.detach().abs().min().item() for p in params) <= 0.01 * 0.5 * (1 + 1e-6)
    compiled = len(introspect._compiled)
    loose = inspect(opt).total
    opt.param_groups[0]["direction.limit"] = 1e-4
    tight = inspect(opt).total
    assert len(introspect._compiled) == compiled
    assert tight.ratio_median < loose.ratio_median and tight.ratio_max <= 1e-6 / min(
        p.detach().abs().min().item() for p in params
    ) * (1 + 1e-6)

    opt, _, _ = _train(lambda ps: momenta.LAMB(ps, lr=0.01, **kwargs), _model(big=False))
    assert introspect._direction(opt.rules(opt.param_groups[0])) is None


def _two_groups(compile: bool):
    """A large group of slow coordinates and a small one moving 100× faster (its lr), in a
    flat bucket each, and a complex parameter (read one parameter at a time)."""
    g = torch.Generator().manual_seed(0)
    large = [torch.nn.Parameter(torch.randn(200, 200, generator=g)) for _ in range(2)]
    small = [torch.nn.Parameter(torch.randn(60, 60, generator=g))]
    odd = [torch.nn.Parameter(torch.randn(20, 10, generator=g, dtype=torch.complex64))]
    opt = momenta.Adam([{"params": large, "lr": 1e-3}, {"params": small, "lr": 0.1}, {"params": odd, "lr": 1e-3}])
    for _ in range(2):
        for p in large + small + odd:
            p.grad = torch.randn(p.shape, generator=g, dtype=p.dtype)
        opt.step()
    assert opt._compiled or not compile
    return opt


@pytest.mark.parametrize("compile", [True, False])
def test_the_median_samples_every_coordinate_alike_in_one_host_read(compile, monkeypatch):
    """A read makes one host read, whatever the param groups: the medians stay on the device
    with every other number. Each group's median samples every k-th of its coordinates laid
    end to end, and the optimizer's every k-th of all of them, so that a group counts by its
    coordinates, not by its number of parts: the optimizer's median of a 2¹⁰ sample is near
    the exact one, within the large group's values, not pulled towards the small fast
    group's (a sample of equal size from each group or part would put it between the two).
    A part too small to be on the read's stride samples nothing there, on the compiled path
    too, and is still read whole in its own group's sample."""
    monkeypatch.setenv("TORCHINDUCTOR_COMPILE_THREADS", "1")
    monkeypatch.setattr(kernels.config, "compile", compile)
    if compile:
        monkeypatch.setattr(kernels.config, "compile_min_numel", 1000)
    opt = _two_groups(compile)
    reads = []
    original = introspect._host

    def counted(tensors):
        reads.append(1)
        return original(tensors)

    monkeypatch.setattr(introspect, "_host", counted)
    monkeypatch.setattr(introspect, "SAMPLE", 2**10)
    sampled = inspect(opt)
    assert len(reads) == 1
    monkeypatch.setattr(introspect, "SAMPLE", 10**9)
    exact = inspect(opt)
    large, small = exact.groups[0].ratio_median, exact.groups[1].ratio_median
    assert small > 20 * large  # the groups move at their lrs
    assert exact.total.ratio_median < 1.5 * large
    assert sampled.total.ratio_median == pytest.approx(exact.total.ratio_median, rel=0.1)
    for got, want in zip(sampled.groups[:2], exact.groups):
        assert got.ratio_median == pytest.approx(want.ratio_median, rel=0.1)
    # the complex parameter: 400 coordinates after the buckets' 83 600, 0 or 1 on the read's
    # stride of 82; its group's sample is all of them
    assert sampled.groups[2].stats == exact.groups[2].stats
    per_parameter = inspect(opt, per_parameter=True)  # besides, not instead of, the groups' own
    assert [g.stats for g in per_parameter.groups] == [g.stats for g in exact.groups]
    assert per_parameter.groups[2].params[0] == exact.groups[2].stats


@pytest.mark.parametrize("precision", ["bf16", "int8", "int4"])
def test_low_precision_states_are_decoded(precision):
    """A ``state_precision`` optimizer's m and V are read decoded (float32): its numbers are
    those of the same reading made from the decoded state by hand, within float32 rounding,
    and near a float32 twin's."""
    params, twins = _model(big=True), _model(big=True)
    opt, inspector, before = _train(lambda ps: momenta.AdamW(ps, lr=0.01, state_precision=precision), params)
    twin, twin_inspector, _ = _train(lambda ps: momenta.AdamW(ps, lr=0.01), twins)
    coded, full = inspector.read().total, twin_inspector.read().total
    assert coded.numel == full.numel
    for key in ("m_norm", "sqrt_v_mean", "update_rms"):
        assert getattr(coded, key) == pytest.approx(getattr(full, key), rel=0.25 if precision == "int4" else 0.1), key
    by_parameter = inspector.read(per_parameter=True)
    assert by_parameter.groups[0].params[0].m_norm == pytest.approx(
        float(opt.state[params[0]]["exp_avg"].double().norm())
        if precision == "bf16"
        else float(
            momenta.engine.storage.Storage.of(opt.param_groups[0], opt.rules(opt.param_groups[0]), params[0])
            .read(opt.state[params[0]], params[0], ("step",))["exp_avg"]
            .double()
            .norm()
        ),
        rel=1e-6,
    )


def test_a_state_that_is_not_float_is_refused():
    """Codes that no ``state_precision`` of the group explains are not read as numbers: an
    error names the buffer."""
    params = _model(big=False)
    opt, _, _ = _train(lambda ps: momenta.Adam(ps, lr=0.01, foreach=False), params, steps=1)
    opt.state[params[0]]["exp_avg"] = torch.zeros(params[0].shape, dtype=torch.uint8)
    with pytest.raises(TypeError, match="'exp_avg' is a torch.uint8 tensor"):
        inspect(opt)
    del opt.state[params[0]]["exp_avg"]
    opt.state[params[0]]["exp_avg_codes"] = torch.zeros(params[0].shape, dtype=torch.uint8)
    with pytest.raises(TypeError, match="no buffer 'exp_avg'"):
        inspect(opt)


def test_the_compiled_pass_equals_the_eager_one(monkeypatch):
    """Where the optimizer compiles, so does the pass; its numbers are the eager pass's. The
    pass compiles whatever SAMPLE is (its examples' sizes are not SAMPLE's: a sample of every
    coordinate, SAMPLE = 10¹³, would have asked for terabytes and fallen back to eager)."""
    monkeypatch.setenv("TORCHINDUCTOR_COMPILE_THREADS", "1")
    monkeypatch.setattr(introspect, "_compiled", {})
    monkeypatch.setattr(introspect, "SAMPLE", 10**13)
    params = _model(big=True)
    opt, inspector, _ = _train(lambda ps: momenta.AdamW(ps, lr=0.01), params)
    assert opt._compiled
    compiled = inspector.read().total
    assert introspect._compiled and all(graph is not None for graph in introspect._compiled.values())
    monkeypatch.setattr(kernels.config, "compile", False)
    eager = inspector.read().total
    for key, value in eager.as_dict().items():
        assert compiled.as_dict()[key] == pytest.approx(value, rel=1e-5), key


def _float64_by_hand(opt, params, before, lr, c1, eps):
    """Adamax's numbers, summed in float64 from ``optimizer.state`` over the parameters with
    a state (√V̂ = u, the running maximum, uncorrected)."""
    owned = [p for p in params if opt.state.get(p)]
    m = torch.cat([opt.state[p]["exp_avg"].double().flatten() for p in owned])
    u = torch.cat([opt.state[p]["exp_inf"].double().flatten() for p in owned])
    w = torch.cat([p.detach().double().flatten() for p in owned])
    delta = torch.cat(
        [(p.detach().double() - b.double()).flatten() for p, b in zip(params, before) if opt.state.get(p)]
    )
    ratio = (lr / c1 * m.abs() / (u + eps) / w.abs())[w != 0]
    return {
        "numel": m.numel(),
        "m_norm": m.norm().item(),
        "sqrt_v_mean": u.mean().item(),
        "ratio_min": ratio.min().item(),
        "ratio_median": ratio.median().item(),
        "ratio_max": ratio.max().item(),
        "update_rms": (delta.norm() / math.sqrt(delta.numel())).item(),
    }


@pytest.mark.parametrize("compile", [True, False])
def test_a_flat_bucket_is_summed_in_float64_over_its_parameters_alone(compile, monkeypatch):
    """One pass over a flat bucket sums in float64: its numbers are the float64 sums of the
    state by hand to float32's rounding of each term (rel 2e-7; a float32 sum of these 10⁵
    terms is off by ~1e-6). The bucket has gaps (regions start on 64-byte boundaries), which
    Adamax's steps fill with ε, and a parameter without a state (no gradient, w ≠ 0): the
    mask leaves both out. Δw is summed in the same pass, against the Inspector's copy of the
    bucket."""
    monkeypatch.setenv("TORCHINDUCTOR_COMPILE_THREADS", "1")
    monkeypatch.setattr(kernels.config, "compile", compile)
    monkeypatch.setattr(introspect, "SAMPLE", 10**9)  # every coordinate: the median exact too
    g = torch.Generator().manual_seed(1)
    params = [torch.randn(n, generator=g).requires_grad_() for n in (70_001, 3, 29_999)]
    idle = torch.randn(5, generator=g).requires_grad_()  # in the bucket, never a gradient
    params.insert(1, idle)
    opt = momenta.Adamax(params, lr=0.01)
    inspector = Inspector(opt)
    for k in range(3):
        before = [p.detach().clone() for p in params]
        opt.zero_grad()
        sum(
            ((p - 0.1 * (k + 1)) ** 2 * torch.linspace(0.5, 2, p.numel())).sum() for p in params if p is not idle
        ).backward()
        opt.step()
    bucket = opt._flat_groups[0].buckets[0]
    layout = bucket.layout
    assert len(bucket.params) == 4 and bucket.state.owners == [0, 2, 3]
    assert layout.numel > sum(layout.sizes)  # gaps, which Adamax's ε fills
    gaps = torch.ones(layout.numel, dtype=torch.bool)
    for o, n in zip(layout.offsets, layout.sizes):
        gaps[o : o + n] = False
    assert (bucket.state.buffers["exp_inf"][gaps] > 0).any()
    assert inspector.flat_before(layout) is inspector._flat[layout]  # Δw from the bucket's copy
    want = _float64_by_hand(opt, params, before, lr=0.01, c1=1 - 0.9**3, eps=1e-8)
    got = inspector.read().total.as_dict()
    assert got["numel"] == want["numel"] == sum(p.numel() for p in params if p is not idle)
    for key in ("m_norm", "sqrt_v_mean", "update_rms"):
        assert got[key] == pytest.approx(want[key], rel=2e-7), key
    for key in ("ratio_min", "ratio_median", "ratio_max"):  # r in float32: a few roundings
        assert got[key] == pytest.approx(want[key], rel=1e-6), key


def test_a_read_after_a_step_that_moved_the_weights_elsewhere():
    """A step that builds the flat buffers anew (a parameter moved out of them, a group added)
    still gives Δw: the hook copied each parameter (the old bucket no longer held them all),
    and the read copies them into the new bucket's layout. (A bucket's own copy, region by
    region, serves per-parameter reads: test_per_parameter_readings_add_up_to_the_group.)"""
    params = _model(big=False)
    opt, inspector, _ = _train(lambda ps: momenta.AdamW(ps, lr=0.01), params, steps=2)
    old = opt._flat_groups[0].buckets[0].layout
    before = [p.detach().clone() for p in params]
    extra = torch.ones(3, requires_grad=True)
    opt.add_param_group({"params": [extra]})
    params[0].data = params[0].data.clone()  # out of the flat buffer: the next step rebuilds it
    opt.zero_grad()
    (_loss(params, 2) + extra.sum()).backward()
    opt.step()
    assert opt._flat_groups[0].buckets[0].layout is not old
    reading = inspector.read()
    delta = torch.cat([(p.detach() - b).flatten() for p, b in zip(params, before)]).double()
    assert reading.groups[0].update_rms == pytest.approx((delta.norm() / math.sqrt(delta.numel())).item(), rel=1e-6)
    moved = (extra.detach() - 1).double()  # the group added before the step: watched from it
    assert reading.groups[1].update_rms == pytest.approx((moved.norm() / math.sqrt(3)).item(), rel=1e-6)


# ---------------------------------------------------------------- sharded parameters (FSDP2)

#: what a sharded read is compared on: m a buffer, m = g, V = 1, no m (and so no r to
#: sample); the reference path, one parameter at a time as FSDP2's DTensors take it, so that
#: both sample the same coordinates
SHARDED = {
    "AdamW": lambda groups: momenta.AdamW(groups, lr=0.01, foreach=False),
    "RMSprop": lambda groups: momenta.RMSprop(groups, lr=0.01, foreach=False),
    "SGD momentum": lambda groups: momenta.SGD(groups, lr=0.05, momentum=0.9, foreach=False),
    "Adadelta": lambda groups: momenta.Adadelta(groups, lr=1.0, foreach=False),
}
#: every coordinate in the median's sample; every k-th of each parameter
SAMPLES = {"every coordinate": None, "sampled": 4}
#: the meshes: FSDP2's one dimension; HSDP's (replicate, shard), sharded over both ranks or
#: replicated on both (each holds all of every parameter: nothing to add up)
MESHES = {"FSDP": (2,), "HSDP 1×2": (1, 2), "HSDP 2×1": (2, 1)}
#: each case: its optimizer, sample and mesh
SHARDED_CASES = {
    **{
        f"{name}, {label}": (make, sample, "FSDP")
        for name, make in SHARDED.items()
        for label, sample in SAMPLES.items()
    },
    **{
        f"AdamW, {label}, {kind}": (SHARDED["AdamW"], sample, kind)
        for kind in MESHES
        if kind != "FSDP"
        for label, sample in SAMPLES.items()
    },
}


def _close(m, what: str, got, want) -> None:
    """``got`` equals ``want`` (a reading's ``as_dict()``): floats to 1e-9, the rest exactly."""
    if isinstance(want, dict):
        m.check(what, isinstance(got, dict) and got.keys() == want.keys(), f"{got} != {want}")
        for key in want if isinstance(got, dict) else ():
            _close(m, f"{what}.{key}", got[key], want[key])
    elif isinstance(want, list):
        m.check(what, isinstance(got, list) and len(got) == len(want), f"{got} != {want}")
        for i, (a, b) in enumerate(zip(got, want)):
            _close(m, f"{what}[{i}]", a, b)
    elif isinstance(want, float) and isinstance(got, float):
        m.check(what, math.isclose(got, want, rel_tol=1e-9, abs_tol=0.0), f"{got!r} != {want!r}")
    else:
        m.check(what, got == want, f"{got!r} != {want!r}")


def scenario(ctx):
    """On every rank: each optimizer trains a float64 MLP sharded by FSDP2 (every Linear and
    the root, ``Shard(0)``; the last layer's one row leaves rank 1 an empty shard; HSDP's
    mesh adds a dimension that replicates) and the
    same MLP whole on the whole batch; both have a plain parameter in their second group
    (replicated: every rank holds all of it). Their readings (``Inspector``, with and
    without ``per_parameter``) must agree, and be the same on every rank."""
    import torch.distributed as dist
    from distributed.common import STEPS, Report, loss_of, make_model
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor, init_device_mesh

    report = Report()
    assert ctx.world_size == 2, "MESHES' shapes"
    meshes = {
        kind: init_device_mesh(ctx.device.type, shape, mesh_dim_names=("replicate", "shard")[-len(shape) :])
        for kind, shape in MESHES.items()
    }
    for case, (make, sample, kind) in SHARDED_CASES.items():
        with report.case(case) as m:
            readings = []
            for sharded in (False, True):
                model = make_model(ctx.device)
                if sharded:
                    for layer in model:
                        if isinstance(layer, torch.nn.Linear):
                            fully_shard(layer, mesh=meshes[kind])
                    fully_shard(model, mesh=meshes[kind])
                extra = torch.linspace(-1, 1, 4, dtype=torch.float64, device=ctx.device).requires_grad_()
                named = list(model.named_parameters())
                groups = [
                    {"params": [p for n, p in named if n.endswith("weight")], "weight_decay": 0.01},
                    {"params": [p for n, p in named if n.endswith("bias")] + [extra]},
                ]
                m.check("sharded", all(isinstance(p, DTensor) == sharded for _, p in named))
                opt = make(groups)
                inspector = Inspector(opt)
                for step in range(STEPS):
                    opt.zero_grad()
                    loss = loss_of(model, step, ctx.rows if sharded else slice(None), ctx.device)
                    (loss + ((extra - 0.5) ** 2).sum()).backward()
                    opt.step()
                kept = introspect.SAMPLE
                introspect.SAMPLE = sample or kept
                try:
                    readings.append([inspector.read().as_dict(), inspector.read(per_parameter=True).as_dict()])
                finally:
                    introspect.SAMPLE = kept
            one, shards = readings
            m.check("Δw", shards[0]["total"]["update_rms"] is not None)
            _close(m, "sharded vs one process", shards, one)
            every = [None] * ctx.world_size
            dist.all_gather_object(every, shards)
            m.check("the same on every rank", all(r == every[0] for r in every), f"{every}")
    return report.result()


@launch.POSIX_ONLY
@pytest.mark.parametrize("case", list(SHARDED_CASES))
def test_sharded_parameters_read_as_one_process(case, tmp_path_factory):
    """FSDP2's DTensor parameters on 2 gloo ranks: each rank reads its shards, the sums,
    minima, maxima and the median's samples are combined across the ranks, and every rank
    gets the reading one process makes of the whole tensors (to 1e-9; the median too, its
    strided sample being the coordinates one process samples)."""
    scenario = "test_introspect:scenario"
    results = launch.shared_run(tmp_path_factory, "introspect-gloo", [scenario], timeout=120)[scenario]
    launch.assert_case(results, case)
