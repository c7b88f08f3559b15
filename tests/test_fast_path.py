"""The fast path (flat buffers, eager or compiled) gives the reference path's numbers, and
keeps torch's semantics when parameters, gradients or state change underneath it."""

from __future__ import annotations

import copy
import itertools
import warnings

import pytest
import torch
from helpers import assert_states_close, only_path, record_graph_builds, record_kernel_runs

import momenta
from momenta import Rules
from momenta.engine import kernels
from momenta.rules import EMA, AMSGrad, EMASq, Gradient, Momentum, One, SumSq

FIRST = [Gradient(), EMA(0.9), EMA(0.8, bias_correction=True), Momentum(0.9, 0.1), Momentum(0.5, nesterov=True)]
SECOND = [One(), SumSq(0.1, 0.01), EMASq(0.99), EMASq(0.9, bias_correction=True, centered=True), AMSGrad(EMASq(0.95, True))]
OPTIONS = [
    dict(),
    dict(precondition="gradient", weight_decay="decoupled"),
    dict(eps="inside", zero_over_zero=True),
]
COMPOSITIONS = [
    pytest.param(Rules(f, s, **o), id=f"{f!r}+{s!r}+{o}")
    for f, s, o in itertools.product(FIRST, SECOND, OPTIONS)
    if not (isinstance(s, One) and o.get("precondition") == "gradient")
]
TOL = {torch.float64: dict(rtol=1e-12, atol=1e-12), torch.float32: dict(rtol=1e-6, atol=1e-6)}


def make_params(dtype, complex_=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = [(7, 5), (5,), (), (2, 3, 4, 4), (0,)]
    ps = [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]
    ps[3] = ps[3].contiguous(memory_format=torch.channels_last)
    out = [p.to(dtype) for p in ps]
    if complex_:
        out = [torch.complex(p, p.flip(0) if p.dim() else p) for p in out]
    return [torch.nn.Parameter(p) for p in out]


def grads_for(params, step, skip=()):
    g = torch.Generator().manual_seed(100 + step)
    for i, p in enumerate(params):
        if i in skip:
            p.grad = None
            continue
        noise = torch.randn(p.shape, generator=g, dtype=torch.float64).to(device=p.device, dtype=p.dtype)
        p.grad = (p.detach().sin() + noise).to(p.dtype)


def train(opt, params, steps, skip_every=None):
    for step in range(steps):
        skip = (1,) if skip_every and step % skip_every == 0 else ()
        grads_for(params, step, skip)
        opt.step()


def run_both(rules, dtype=torch.float64, steps=5, complex_=False, **kw):
    """The same training on the reference path (``foreach=False``) and the fast path, each
    checked to have taken every step on its own path."""
    results = []
    for foreach, path in ((False, "reference"), (None, "flat")):
        params = make_params(dtype, complex_)
        opt = momenta.Composed(params, rules, lr=0.01, foreach=foreach, **kw)
        with only_path(path):
            train(opt, params, steps)
        results.append((params, opt))
    return results


def assert_same(a, b, dtype, tol=None):
    (pa, oa), (pb, ob) = a, b
    tol = tol or TOL[dtype]
    for x, y in zip(pa, pb):
        torch.testing.assert_close(x.detach(), y.detach(), **tol)
    assert_states_close(ob.state_dict()["state"], oa.state_dict()["state"], **tol)


@pytest.mark.parametrize("rules", COMPOSITIONS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_flat_equals_reference_for_every_composition(rules, dtype):
    ref, fast = run_both(rules, dtype, weight_decay=0.1, maximize=dtype == torch.float32)
    assert_same(ref, fast, dtype)


@pytest.mark.parametrize("rules", COMPOSITIONS[::7])
def test_flat_equals_reference_complex(rules):
    ref, fast = run_both(rules, torch.float64, complex_=True, weight_decay=0.1)
    assert_same(ref, fast, torch.float64)


def test_parameters_live_in_one_buffer_and_gradients_accumulate_there():
    params = make_params(torch.float32)
    opt = momenta.Adam(params, lr=0.01)
    train(opt, params, 2)
    storages = {p.untyped_storage().data_ptr() for p in params}
    assert len(storages) == 1
    assert params[3].is_contiguous(memory_format=torch.channels_last)
    grad_ptrs = [p.grad.data_ptr() for p in params]
    # zero_grad(set_to_none=False) + backward: autograd accumulates into the flat views
    opt.zero_grad(set_to_none=False)
    sum((p.float() ** 2).sum() for p in params if p.numel()).backward()
    assert [p.grad.data_ptr() for p in params] == grad_ptrs
    state = opt.state[params[0]]
    assert state["exp_avg"].untyped_storage().data_ptr() == opt.state[params[1]]["exp_avg"].untyped_storage().data_ptr()


@pytest.mark.parametrize("set_to_none", [True, False])
@pytest.mark.parametrize("via_model", [True, False])
def test_zero_grad_variants_match_torch(set_to_none, via_model):
    results = []
    for cls in (torch.optim.AdamW, momenta.AdamW):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)).double()
        opt = cls(model.parameters(), lr=0.05)
        x = torch.randn(16, 6, dtype=torch.float64)
        for step in range(6):
            (model if via_model else opt).zero_grad(set_to_none=set_to_none)
            model(x + step).pow(2).mean().backward()
            opt.step()
        results.append([p.detach().clone() for p in model.parameters()])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_parameters_without_gradient_are_skipped_as_torch_skips_them():
    results = []
    for cls in (torch.optim.Adam, momenta.Adam):
        params = make_params(torch.float64)
        opt = cls(params, lr=0.05)
        train(opt, params, 7, skip_every=3)
        results.append((params, opt))
    assert_same(results[0], results[1], torch.float64)
    assert results[1][1].state[results[1][0][1]]["step"].item() == 4  # stepped 4 of 7 times


def test_frozen_parameters_in_the_optimizer():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 1)).double()
    model[0].weight.requires_grad_(False)
    reference = copy.deepcopy(model)
    opts = [torch.optim.Adam(reference.parameters(), lr=0.1), momenta.Adam(model.parameters(), lr=0.1)]
    x = torch.randn(8, 4, dtype=torch.float64)
    for step in range(5):
        if step == 3:  # unfreeze: the engine must pick the parameter up
            model[0].weight.requires_grad_(True)
            reference[0].weight.requires_grad_(True)
        for m, o in zip((reference, model), opts):
            o.zero_grad()
            m(x).pow(2).mean().backward()
            o.step()
    for a, b in zip(reference.parameters(), model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("move", ["to-new-storage", "double-before-first-step"])
def test_model_to_after_construction_is_detected(move):
    torch.manual_seed(0)
    model = torch.nn.Linear(5, 3)
    reference = copy.deepcopy(model)
    opt, ref_opt = momenta.Adam(model.parameters(), lr=0.1), torch.optim.Adam(reference.parameters(), lr=0.1)
    x = torch.randn(4, 5)
    for step in range(4):
        if move == "double-before-first-step" and step == 0:
            model.double(), reference.double()
            x = x.double()
        if move == "to-new-storage" and step == 2:  # what .to(other_device) does
            model._apply(lambda t: t.clone())
        for m, o in ((model, opt), (reference, ref_opt)):
            o.zero_grad()
            m(x).pow(2).sum().backward()
            o.step()
    for a, b in zip(model.parameters(), reference.parameters()):
        assert a.dtype == b.dtype
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    assert len({p.untyped_storage().data_ptr() for p in model.parameters()}) == 1


def test_replaced_data_and_loaded_model_weights_are_used():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 3).double()
    opt = momenta.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x = torch.randn(2, 3, dtype=torch.float64)
    model(x).sum().backward()
    opt.step()
    new_weight = torch.zeros(3, 3, dtype=torch.float64)
    model.weight.data = new_weight.clone()  # re-pointed: the optimizer must follow
    model.load_state_dict({"weight": torch.ones(3, 3, dtype=torch.float64), "bias": torch.zeros(3, dtype=torch.float64)})
    opt.zero_grad()
    model(x).sum().backward()
    grad = model.weight.grad.clone()
    buf = opt.state[model.weight]["momentum_buffer"].clone()
    opt.step()
    torch.testing.assert_close(model.weight.detach(), torch.ones(3, 3, dtype=torch.float64) - 0.1 * (0.9 * buf + grad))


def test_param_group_added_later_and_state_dict_reload():
    params = make_params(torch.float64)
    opt = momenta.Adam(params[:2], lr=0.05)
    ref_params = make_params(torch.float64)
    ref = torch.optim.Adam(ref_params[:2], lr=0.05)
    for o, ps in ((opt, params), (ref, ref_params)):
        train(o, ps, 2)
        o.add_param_group({"params": ps[2:], "lr": 0.01})
        train(o, ps, 2)
    opt.load_state_dict(ref.state_dict())  # torch's tensors replace the flat views
    for o, ps in ((opt, params), (ref, ref_params)):
        train(o, ps, 3)
    assert_same((ref_params, ref), (params, opt), torch.float64)


def test_foreign_views_are_not_taken_over():
    buffer = torch.zeros(10, dtype=torch.float64)
    a, b = torch.nn.Parameter(torch.ones(4, dtype=torch.float64)), torch.nn.Parameter(torch.ones(6, dtype=torch.float64))
    a.data, b.data = buffer[:4], buffer[4:]  # someone else's bucket (ZeroRedundancyOptimizer)
    opt = momenta.SGD([a, b], lr=0.5)
    a.grad, b.grad = torch.ones(4, dtype=torch.float64), torch.ones(6, dtype=torch.float64)
    opt.step()
    assert a.data_ptr() == buffer.data_ptr()
    torch.testing.assert_close(buffer, torch.full((10,), -0.5, dtype=torch.float64))


# -- compiled kernels -------------------------------------------------------------------


@pytest.mark.parametrize(
    "rules",
    [
        pytest.param(Rules(EMA(0.9, True), AMSGrad(EMASq(0.999, True)), weight_decay="decoupled"), id="adamw-amsgrad"),
        pytest.param(Rules(Momentum(0.9), EMASq(0.99, centered=True, name="square_avg"), precondition="gradient"), id="rmsprop-momentum"),
    ],
)
@pytest.mark.parametrize("per_tensor", [False, True], ids=["gathered", "per-tensor"])
def test_compiled_equals_reference(compiled_kernels, rules, per_tensor, monkeypatch):
    # fresh gradient tensors every step: gathered into the flat buffer, or (per-tensor) left
    # where autograd put them with one kernel call per parameter
    monkeypatch.setattr(kernels.config, "direct_min_numel", 16 if per_tensor else 2**40)
    runs = compiled_kernels.runs
    # Inductor contracts a·b + c into fused multiply-adds: float32 differs from eager in the
    # last bits, and the centered variance V − ḡ² (a difference of close numbers) scales
    # that by up to ~10 over four steps
    tolerance = {torch.float64: TOL[torch.float64], torch.float32: dict(rtol=1e-5, atol=1e-6)}
    for dtype in (torch.float64, torch.float32):
        ref, fast = run_both(rules, dtype, steps=4, weight_decay=0.1)
        assert_same(ref, fast, dtype, tolerance[dtype])
    assert runs and all(runs)  # compiled kernels really ran, and none fell back


def test_schedules_cause_no_recompilation(compiled_kernels):
    """Once the first steps have compiled AdamW's kernel (or found it compiled), 99 steps of
    OneCycleLR, whose lr and β₁ change at every step, run that kernel: every step calls
    it, every call runs compiled, and no graph compiles, by momenta (a rule structure met
    anew) or by dynamo (a guard that failed, where torch.compile serves)."""
    runs, built = compiled_kernels
    dynamo = torch._dynamo.utils.counters["stats"]
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(64, 32)), torch.nn.Parameter(torch.randn(32))]
    opt = momenta.AdamW(params, lr=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.05, total_steps=101)
    for step in range(2):  # the first step compiles, unless an earlier test did
        grads_for(params, step)
        opt.step()
        sched.step()
    assert runs == [True, True], "the first steps did not run the compiled kernel"
    graphs, dynamo_graphs = len(built), dynamo["unique_graphs"]
    betas = set()
    for step in range(2, 101):
        grads_for(params, step)
        opt.step()
        sched.step()
        betas.add(opt.param_groups[0]["betas"][0])
    assert len(betas) > 50  # lr and beta1 really changed every step
    assert runs == [True] * 101, "a step ran without the compiled kernel"
    assert (len(built), dynamo["unique_graphs"]) == (graphs, dynamo_graphs), "a schedule compiled a graph"
    # another instance with the same rules shares the kernel: no compilation either
    other = [torch.nn.Parameter(torch.randn(300))]
    opt2 = momenta.AdamW(other, lr=0.5, betas=(0.8, 0.9))
    for step in range(3):
        grads_for(other, step)
        opt2.step()
    assert runs == [True] * 104
    assert (len(built), dynamo["unique_graphs"]) == (graphs, dynamo_graphs)


def test_compilation_off_warns_once_and_gives_the_same_numbers(monkeypatch):
    monkeypatch.setattr(kernels.config, "compile_min_numel", 0)
    monkeypatch.setattr(kernels.config, "compile", False)
    monkeypatch.setattr(kernels, "_warned", set())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ref, fast = run_both(Rules(EMA(0.9, True), EMASq(0.999, True)), torch.float64, steps=4)
        run_both(Rules(Gradient(), SumSq()), torch.float64, steps=2)
    assert_same(ref, fast, torch.float64)
    messages = [str(w.message) for w in caught if "compiled kernels are off" in str(w.message)]
    assert len(messages) == 1


def test_small_buckets_never_compile(monkeypatch):
    """Below ``compile_min_numel`` no step calls a kernel, and no graph compiles, by momenta
    or by dynamo."""
    monkeypatch.setattr(kernels.config, "compile", True)
    runs, built = record_kernel_runs(monkeypatch), record_graph_builds(monkeypatch)
    before = dict(torch._dynamo.utils.counters["stats"])
    for _ in range(50):  # many short-lived instances, as in tests
        params = make_params(torch.float32)
        opt = momenta.Adam(params, lr=0.01)
        train(opt, params, 2)
    assert not runs and not built
    assert dict(torch._dynamo.utils.counters["stats"]) == before


def test_state_edited_by_hand_is_picked_up():
    """Replacing a buffer, or the whole state, is seen by the next step, as torch sees it."""
    results = []
    for cls in (torch.optim.Adam, momenta.Adam):
        params = make_params(torch.float64)
        opt = cls(params, lr=0.05)
        train(opt, params, 3)
        opt.state[params[0]]["exp_avg"] = torch.zeros_like(params[0])  # a new tensor
        opt.state[params[1]]["exp_avg_sq"].mul_(0.5)  # in place
        del opt.state[params[2]]  # forgotten: starts again at step 1
        train(opt, params, 3)
        results.append((params, opt))
    assert_same(results[0], results[1], torch.float64)


def test_optimizer_pickles_and_deep_copies():
    import io

    params = make_params(torch.float32)
    opt = momenta.Adam(params, lr=0.05)
    train(opt, params, 2)
    clone = copy.deepcopy(opt)
    assert type(clone.state) is type(opt.state)
    buffer = io.BytesIO()
    torch.save(opt, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    train(loaded, loaded.param_groups[0]["params"], 2)
    train(opt, params, 2)
    for a, b in zip(params, loaded.param_groups[0]["params"]):
        torch.testing.assert_close(a, b)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (Triton kernels)")
def test_cuda_compiled_equals_reference(compiled_kernels):
    rules = Rules(EMA(0.9, True), EMASq(0.999, True), weight_decay="decoupled")
    results = []
    for foreach in (False, None):
        params = [torch.nn.Parameter(p.cuda()) for p in make_params(torch.float32)]
        opt = momenta.Composed(params, rules, lr=0.01, foreach=foreach, weight_decay=0.1)
        train(opt, params, 4)
        results.append([p.detach().cpu() for p in params])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_rules_are_rebuilt_when_a_value_changes_in_place():
    """Rules are cached between steps; a tensor hyperparameter edited in place still counts."""
    results = []
    for cls in (torch.optim.Adam, momenta.Adam):
        p = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
        opt = cls([p], lr=0.1, betas=(torch.tensor(0.9, dtype=torch.float64), torch.tensor(0.999, dtype=torch.float64)))
        for step in range(4):
            if step == 2:
                opt.param_groups[0]["betas"][0].fill_(0.5)  # in place: same tensor object
                opt.param_groups[0]["eps"] = 1e-3
            p.grad = torch.full((3,), 0.5 + step, dtype=torch.float64)
            opt.step()
        results.append(p.detach().clone())
    torch.testing.assert_close(results[1], results[0], rtol=1e-12, atol=0)


NO_COMPILER_SCRIPT = """
import warnings, torch, momenta
from momenta.engine import flat, kernels
kernels.config.compile_min_numel = 0
results = []
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    for foreach in (False, None):
        torch.manual_seed(0)
        params = [torch.nn.Parameter(torch.randn(50)), torch.nn.Parameter(torch.randn(7, 3))]
        opt = momenta.AdamW(params, lr=0.1, foreach=foreach)
        for step in range(4):
            for p in params:
                p.grad = torch.sin(p.detach() + step)
            opt.step()
        results.append(torch.cat([p.detach().flatten() for p in params]))
messages = [str(w.message) for w in caught if str(w.message).startswith("momenta:")]
assert len(messages) == 1, messages  # one rule structure: one warning
assert "compiling" in messages[0] and "failed" in messages[0], messages
torch.testing.assert_close(results[1], results[0], rtol=1e-6, atol=1e-7)
print("fell back")
"""


def test_without_a_compiler_the_engine_warns_once_and_runs_eagerly(tmp_path):
    """No C++ compiler on PATH and an empty Inductor cache: compilation fails, the engine
    says so once (per rule structure) and gives the reference numbers."""
    import os
    import subprocess
    import sys

    env = {
        **os.environ,
        "PATH": str(tmp_path),  # no cc, gcc, g++ or clang to be found
        "CXX": str(tmp_path / "no-such-compiler"),
        "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor"),
        "TORCHINDUCTOR_COMPILE_THREADS": "1",
    }
    done = subprocess.run(
        [sys.executable, "-c", NO_COMPILER_SCRIPT], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "fell back" in done.stdout


def test_a_storage_someone_else_holds_is_not_taken_over():
    """A parameter whose storage another tensor holds (ZeroRedundancyOptimizer's bucket of
    one parameter, a user's alias) keeps it: re-pointing would leave the holder stale."""
    p = torch.nn.Parameter(torch.ones(6, dtype=torch.float64))
    q = torch.nn.Parameter(torch.ones(4, dtype=torch.float64))
    bucket = torch.zeros(6, dtype=torch.float64)
    p.data = bucket  # p is the only tenant, offset 0, same size: still someone else's
    opt = momenta.SGD([p, q], lr=0.5)
    for _ in range(2):
        p.grad, q.grad = torch.ones(6, dtype=torch.float64), torch.ones(4, dtype=torch.float64)
        opt.step()
    assert p.data_ptr() == bucket.data_ptr()
    torch.testing.assert_close(bucket, torch.full((6,), -1.0, dtype=torch.float64))


def test_a_rebuilt_group_keeps_its_parameters_flat():
    """A parameter joining later (unfrozen) rebuilds the buckets; those already in them stay."""
    params = [torch.nn.Parameter(torch.randn(8)) for _ in range(3)]
    opt = momenta.Adam(params, lr=0.1)
    for step in range(4):
        for i, p in enumerate(params):
            p.grad = None if (i == 2 and step < 2) else torch.randn(8)
        opt.step()
    assert len({p.untyped_storage().data_ptr() for p in params}) == 1
    assert not opt._flat_groups[0].others


def test_compiled_per_tensor_complex_and_odd_layouts(compiled_kernels, monkeypatch):
    """Complex parameters, channels_last, a scalar and an empty tensor, one kernel call each."""
    monkeypatch.setattr(kernels.config, "direct_min_numel", 16)  # the (7, 5) and (2, 3, 4, 4) ones alone
    rules = Rules(EMA(0.9, True), AMSGrad(EMASq(0.999, True)), weight_decay="decoupled")
    with warnings.catch_warnings():
        # a fallback to eager (e.g. dynamo's recompile limit: sizes 0 and 1 specialise)
        # would still give the right numbers; here it must not happen
        warnings.filterwarnings("error", message="momenta:")
        ref, fast = run_both(rules, torch.float64, steps=4, complex_=True, weight_decay=0.1)
    assert_same(ref, fast, torch.float64)
    assert fast[0][3].is_contiguous(memory_format=torch.channels_last)


def test_a_kernel_failing_midway_moves_every_element_exactly_once(compiled_kernels, monkeypatch):
    """Per-tensor calls where compilation fails after the first call (as dynamo's recompile
    limit can): the remaining slices run eagerly, none is stepped twice."""
    monkeypatch.setattr(kernels.config, "direct_min_numel", 16)
    calls = []
    real_call = kernels.Kernel.__call__

    def flaky(self, *args):
        calls.append(1)
        if len(calls) % 3 == 2:  # every few calls, "compilation fails"
            return False
        return real_call(self, *args)

    monkeypatch.setattr(kernels.Kernel, "__call__", flaky)
    rules = Rules(EMA(0.9, True), EMASq(0.999, True), weight_decay="decoupled")
    ref, fast = run_both(rules, torch.float64, steps=4, weight_decay=0.1)
    assert_same(ref, fast, torch.float64)
    assert len(calls) > 3


def test_a_slow_compile_is_logged_with_how_to_turn_it_off(compiled_kernels, monkeypatch, caplog):
    """The step that waits for a kernel to compile says so on the ``momenta`` logger, naming
    the optimizer and the switch; later steps say nothing."""
    from dataclasses import dataclass

    from momenta.rules import SecondMoment

    @dataclass(frozen=True)
    class HalfSq(SecondMoment):  # a structure no other test compiles
        beta: float = 0.9
        formula = "V = β·V + (1−β)·g²/2"

        def init(self, p):
            return {"half_sq": torch.zeros_like(p)}

        def update(self, state, g, m, t):
            v = self.beta * state["half_sq"] + (1 - self.beta) * g * g / 2
            return v, {"half_sq": v}

    class HalfAdam(momenta.Optimizer):
        def __init__(self, params, lr=0.01, eps=1e-8):
            super().__init__(params, dict(lr=lr, eps=eps))

        def rules(self, group):
            return Rules(EMA(0.9), HalfSq())

    monkeypatch.setattr(kernels.config, "slow_compile_s", 0.0)
    params = make_params(torch.float32)
    opt = HalfAdam(params)
    with caplog.at_level("WARNING", logger="momenta"):
        train(opt, params, 1)
    messages = [r.getMessage() for r in caplog.records if r.name == "momenta"]
    assert len(messages) == 1 and "HalfAdam" in messages[0] and "MOMENTA_COMPILE=0" in messages[0], messages
    caplog.clear()
    with caplog.at_level("WARNING", logger="momenta"):
        train(opt, params, 2)
    assert not [r for r in caplog.records if r.name == "momenta"]


@pytest.mark.parametrize("set_to_none", [True, False])
def test_large_gradients_stay_autograds_and_have_no_region_in_the_flat_buffer(monkeypatch, set_to_none):
    """A bucket lays its parameters out smallest first; the large ones' gradients are used
    where autograd put them, so the flat gradient buffer ends where the large ones begin
    (memory: no second copy of their gradients), with torch's numbers in both zero_grad modes."""
    monkeypatch.setattr(kernels.config, "compile_min_numel", 0)
    monkeypatch.setattr(kernels.config, "direct_min_numel", 64)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.LayerNorm(16), torch.nn.Linear(16, 4))
    twin = copy.deepcopy(model)
    opt = momenta.AdamW(model.parameters(), lr=0.1, weight_decay=0.1)
    reference = torch.optim.AdamW(twin.parameters(), lr=0.1, weight_decay=0.1)
    x = torch.randn(8, 16)
    for _ in range(4):
        for m, o in ((model, opt), (twin, reference)):
            m(x).square().mean().backward()
            o.step()
            o.zero_grad(set_to_none=set_to_none)
    for p, q in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(p, q)
    (bucket,) = opt._flat_groups[0].buckets
    sizes = [p.numel() for p in bucket.params]
    assert sizes == sorted(sizes)
    split = bucket.split(64)
    assert [sizes[i] for i in split.large] == [64, 256]
    assert bucket.grad.numel() == bucket.layout.offsets[split.large[0]] < bucket.layout.numel
    if not set_to_none:  # the small ones accumulate in the flat buffer, the large ones in autograd's
        grad = bucket.grad
        within = [grad.data_ptr() <= p.grad.data_ptr() < grad.data_ptr() + grad.nbytes for p in bucket.params]
        assert within == [i in split.small for i in range(len(sizes))]
