"""The modern optimizers (momenta.optimizers.modern) against their established
implementations, in float64: AdaBelief and Yogi (torch-optimizer), Lion (lion-pytorch),
LAMB and AdEMAMix (optax, via jax with x64), LARS (torch-optimizer for λ > 0, optax for
λ = 0), Schedule-Free AdamW (the authors' schedulefree), AdafactorPaper (torch-optimizer,
the fairseq port of the authors' code; optax for a 3-D parameter).

The references are test-only dependencies pinned in pyproject's ``test`` extra; a missing
one skips its cases. jax's x64 switch is process-wide: it is turned on by a module fixture
(before this module creates any jax array) and put back afterwards.
"""

from __future__ import annotations

import inspect
import io
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import torch
from helpers import assert_states_close

import momenta
from momenta.rules.first import ademamix_alpha, ademamix_beta3

STEPS = 20
SHAPES = [(3, 4), (5,), (2, 7)]
#: float64 through the same sequence of operations as each reference (up to the order of a
#: few additions and √(V/c) against √V/√c): the differences are rounding, ≤ 1e-14 relative
#: (atol only for entries that happen to pass close to 0; the parameters are O(1))
REFERENCE_TOL = dict(rtol=1e-9, atol=1e-12)
PATH_TOL = dict(rtol=1e-12, atol=1e-14)


def problem(shapes=SHAPES, steps=STEPS, seed=0):
    """Initial parameters and one gradient per step and parameter (float64 numpy)."""
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(s) for s in shapes]
    grads = [[rng.standard_normal(s) for s in shapes] for _ in range(steps)]
    return params, grads


def decaying(k):
    """The lr factor at step k (0-based): torch's LambdaLR, and optax's schedules of the count."""
    return 0.9**k


# -- runners -------------------------------------------------------------------------------


def run_torch(make, params, grads, schedule=None, before=None, after=None, dtype=torch.float64):
    """Any torch.optim.Optimizer (momenta's or a reference): fresh gradient tensors every
    step (some references write into p.grad), LambdaLR stepped after each step."""
    ps = [torch.nn.Parameter(torch.tensor(x, dtype=dtype)) for x in params]
    opt = make(ps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule) if schedule else None
    if before is not None:
        before(opt)
    for gs in grads:
        for p, g in zip(ps, gs):
            p.grad = torch.tensor(g, dtype=dtype)
        opt.step()
        if sched is not None:
            sched.step()
    if after is not None:
        after(opt)
    return [p.detach().numpy().copy() for p in ps], opt


def run_optax(tx, params, grads):
    import jax.numpy as jnp
    import optax

    p = [jnp.asarray(x) for x in params]
    state = tx.init(p)
    for gs in grads:
        updates, state = tx.update([jnp.asarray(g) for g in gs], state, p)
        p = optax.apply_updates(p, updates)
    out = [np.asarray(x, dtype=np.float64) for x in p]
    assert all(x.dtype == np.float64 for x in p), "jax is not in x64 mode"
    return out


def optax_lr(lr, schedule):
    return (lambda count: lr * schedule(count)) if schedule else lr


# -- references: for each method, the implementation that computes its paper's algorithm --


def ref_adabelief(params, grads, schedule=None, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                  decoupled_weight_decay=True):  # fmt: skip
    import torch_optimizer

    make = lambda ps: torch_optimizer.AdaBelief(  # noqa: E731
        ps, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=False,
        weight_decouple=decoupled_weight_decay, fixed_decay=False, rectify=False,
    )  # fmt: skip
    return run_torch(make, params, grads, schedule)[0]


def ref_lion(params, grads, schedule=None, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0):
    from lion_pytorch import Lion

    make = lambda ps: Lion(ps, lr=lr, betas=betas, weight_decay=weight_decay, use_triton=False)  # noqa: E731
    return run_torch(make, params, grads, schedule)[0]


def ref_lamb(params, grads, schedule=None, lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01):
    import optax

    # torch_optimizer.Lamb is not the paper's (no bias correction, φ clipped at 10)
    tx = optax.lamb(optax_lr(lr, schedule), b1=betas[0], b2=betas[1], eps=eps, eps_root=0.0, weight_decay=weight_decay)
    return run_optax(tx, params, grads)


def ref_lars(params, grads, schedule=None, lr=1.0, momentum=0.9, weight_decay=5e-4, trust_coefficient=1e-3, eps=0.0):
    if weight_decay != 0:  # torch_optimizer.LARS skips the local rate when λ = 0
        import torch_optimizer

        make = lambda ps: torch_optimizer.LARS(  # noqa: E731
            ps, lr=lr, momentum=momentum, dampening=0.0, weight_decay=weight_decay, nesterov=False,
            trust_coefficient=trust_coefficient, eps=eps,
        )  # fmt: skip
        return run_torch(make, params, grads, schedule)[0]
    import optax  # its denominator ‖g + λ·w‖ is the paper's only for λ = 0

    assert schedule is None  # optax puts lr inside the momentum (the paper), torch outside
    tx = optax.lars(lr, weight_decay=0.0, trust_coefficient=trust_coefficient, eps=eps, momentum=momentum)
    return run_optax(tx, params, grads)


def ref_yogi(params, grads, schedule=None, lr=1e-2, betas=(0.9, 0.999), eps=1e-3, initial_accumulator=1e-6,
             weight_decay=0.0):  # fmt: skip
    import torch_optimizer

    make = lambda ps: torch_optimizer.Yogi(  # noqa: E731
        ps, lr=lr, betas=betas, eps=eps, initial_accumulator=initial_accumulator, weight_decay=weight_decay
    )
    return run_torch(make, params, grads, schedule)[0]


def ref_schedule_free(params, grads, schedule=None, eval_=False, **kwargs):
    import schedulefree

    make = lambda ps: schedulefree.AdamWScheduleFree(ps, foreach=False, **kwargs)  # noqa: E731
    after = (lambda opt: opt.eval()) if eval_ else None
    return run_torch(make, params, grads, schedule, before=lambda opt: opt.train(), after=after)[0]


def ref_ademamix(params, grads, schedule=None, lr=1e-3, betas=(0.9, 0.999), beta3=0.9999, alpha=5.0,
                 alpha_warmup=None, beta3_warmup=None, eps=1e-8, weight_decay=0.0):  # fmt: skip
    import jax
    import jax.numpy as jnp
    from optax import contrib

    def host(fn):  # optax evaluates schedules at count = t − 1; the paper at t
        return lambda count: jnp.asarray(fn(int(jax.device_get(count)) + 1), dtype=jnp.float64)

    def alpha_t(t):
        return alpha if alpha_warmup is None else (alpha * t / alpha_warmup if t < alpha_warmup else alpha)

    def beta3_t(t):  # the half-life warm-up, as a host float (the notes' transcription)
        if beta3_warmup is None or t >= beta3_warmup:
            return beta3
        a, f = t / beta3_warmup, (lambda b: math.log(0.5) / math.log(b) - 1)
        return math.pow(0.5, 1.0 / ((1 - a) * f(betas[0]) + a * f(beta3) + 1))

    tx = contrib.ademamix(
        optax_lr(lr, schedule), b1=betas[0], b2=betas[1], b3=host(beta3_t), alpha=host(alpha_t), eps=eps,
        eps_root=0.0, weight_decay=weight_decay,
    )  # fmt: skip
    return run_optax(tx, params, grads)


def ref_adafactor(params, grads, schedule=None, lr=1e-2, eps1=1e-30, eps2=1e-3, clip_threshold=1.0,
                  decay_rate=-0.8, beta1=None, weight_decay=0.0, scale_parameter=True, relative_step=True):  # fmt: skip
    import torch_optimizer

    assert all(np.ndim(x) <= 2 for x in params)  # its row mean lacks keepdim beyond 2-D
    make = lambda ps: torch_optimizer.Adafactor(  # noqa: E731
        ps, lr=None if relative_step else lr, eps2=(eps1, eps2), clip_threshold=clip_threshold,
        decay_rate=decay_rate, beta1=beta1, weight_decay=weight_decay, scale_parameter=scale_parameter,
        relative_step=relative_step, warmup_init=False,
    )  # fmt: skip
    return run_torch(make, params, grads, schedule)[0]


def ref_adafactor_optax(params, grads, schedule=None):
    """The paper's defaults as an optax chain (any rank): optax.adafactor itself computes
    1 − t^−0.8 in float32 and factors only dimensions of 128 or more."""
    import jax.numpy as jnp
    import optax

    tx = optax.chain(
        optax.scale_by_factored_rms(
            factored=True, min_dim_size_to_factor=1, epsilon=1e-30, decay_rate=0.8,
            decay_rate_fn=lambda i, e: 1.0 - jnp.asarray(i + 1, jnp.float64) ** (-e),
        ),
        optax.clip_by_block_rms(1.0),
        optax.scale_by_learning_rate(lambda c: jnp.minimum(1e-2, 1.0 / jnp.sqrt(c + 1.0)), flip_sign=False),
        optax.scale_by_param_block_rms(1e-3),
        optax.scale(-1.0),
    )  # fmt: skip
    return run_optax(tx, params, grads)


# -- the cases -------------------------------------------------------------------------------


@dataclass
class Case:
    cls: type[torch.optim.Optimizer]
    kwargs: dict[str, Any]
    reference: Callable[..., list[np.ndarray]]
    needs: str  # the reference's package
    ref_kwargs: dict[str, Any] | None = None  # default: kwargs
    shapes: list[tuple[int, ...]] = field(default_factory=lambda: SHAPES)
    schedule: bool = True  # the reference can follow an lr schedule too

    def ref(self, params, grads, schedule=None):
        kw = self.kwargs if self.ref_kwargs is None else self.ref_kwargs
        return self.reference(params, grads, schedule, **kw)


CASES = {
    "adabelief": Case(momenta.AdaBelief, {}, ref_adabelief, "torch_optimizer"),
    "adabelief-decoupled": Case(
        momenta.AdaBelief, dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1), ref_adabelief, "torch_optimizer"
    ),
    "adabelief-l2": Case(
        momenta.AdaBelief, dict(lr=1e-2, weight_decay=0.1, decoupled_weight_decay=False), ref_adabelief, "torch_optimizer"
    ),
    "lion": Case(momenta.Lion, {}, ref_lion, "lion_pytorch"),
    "lion-decay": Case(momenta.Lion, dict(lr=1e-2, betas=(0.8, 0.95), weight_decay=0.5), ref_lion, "lion_pytorch"),
    "lamb": Case(momenta.LAMB, {}, ref_lamb, "optax"),
    "lamb-options": Case(momenta.LAMB, dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-3, weight_decay=0.1), ref_lamb, "optax"),
    "lamb-no-decay": Case(momenta.LAMB, dict(lr=1e-2, weight_decay=0.0), ref_lamb, "optax"),
    "lars": Case(momenta.LARS, {}, ref_lars, "torch_optimizer"),
    "lars-options": Case(
        momenta.LARS, dict(lr=0.1, momentum=0.5, weight_decay=1e-2, trust_coefficient=1e-2, eps=1e-8), ref_lars,
        "torch_optimizer",
    ),
    "lars-no-momentum": Case(momenta.LARS, dict(lr=0.5, momentum=0.0, weight_decay=1e-3), ref_lars, "torch_optimizer"),
    "lars-no-decay": Case(momenta.LARS, dict(lr=0.1, weight_decay=0.0), ref_lars, "optax", schedule=False),
    "yogi": Case(momenta.Yogi, {}, ref_yogi, "torch_optimizer"),
    "yogi-options": Case(
        momenta.Yogi, dict(lr=0.1, betas=(0.8, 0.99), eps=1e-4, initial_accumulator=0.0, weight_decay=0.1), ref_yogi,
        "torch_optimizer",
    ),
    "schedule-free": Case(momenta.ScheduleFreeAdamW, {}, ref_schedule_free, "schedulefree"),
    "schedule-free-options": Case(
        momenta.ScheduleFreeAdamW,
        dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1, warmup_steps=5, r=0.5, weight_lr_power=1.0),
        ref_schedule_free, "schedulefree",
    ),
    "ademamix": Case(momenta.AdEMAMix, {}, ref_ademamix, "optax"),
    "ademamix-warmups": Case(
        momenta.AdEMAMix,
        dict(lr=1e-2, betas=(0.8, 0.99), beta3=0.999, alpha=8.0, alpha_warmup=10, beta3_warmup=15, eps=1e-6,
             weight_decay=0.1),
        ref_ademamix, "optax",
    ),
    "adafactor-paper": Case(momenta.AdafactorPaper, {}, ref_adafactor, "torch_optimizer", schedule=False),
    "adafactor-paper-momentum": Case(
        momenta.AdafactorPaper,
        dict(eps2=1e-2, clip_threshold=0.5, decay_rate=-0.5, beta1=0.9, weight_decay=0.1),
        ref_adafactor, "torch_optimizer", schedule=False,
    ),
    "adafactor-paper-absolute": Case(
        momenta.AdafactorPaper, dict(lr=0.05, relative_step=False, scale_parameter=False, weight_decay=0.1),
        ref_adafactor, "torch_optimizer",
    ),
    "adafactor-paper-3d": Case(
        momenta.AdafactorPaper, {}, ref_adafactor_optax, "optax", shapes=[(2, 3, 4), (3, 4), (5,)], schedule=False
    ),
}

#: the optimizers whose rules are all elementwise (the fast path and compiled kernels)
ELEMENTWISE = ["adabelief-decoupled", "lion-decay", "yogi-options", "schedule-free-options", "ademamix-warmups"]


@pytest.fixture(scope="module")
def jax64():
    """jax in x64 mode for this module only (process-wide in jax; torch is unaffected)."""
    jax = pytest.importorskip("jax")
    pytest.importorskip("optax")
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield jax
    jax.config.update("jax_enable_x64", previous)


@pytest.fixture
def reference_of(request):
    """The case's reference, its package imported (skipped if missing), jax in x64."""

    def get(case: Case) -> Case:
        pytest.importorskip(case.needs)
        if case.needs == "optax":
            request.getfixturevalue("jax64")
        return case

    return get


def run_momenta(case: Case, params, grads, schedule=None, foreach=None, **extra):
    make = lambda ps: case.cls(ps, foreach=foreach, **case.kwargs)  # noqa: E731
    return run_torch(make, params, grads, schedule, **extra)


def assert_params_close(actual, expected, tol=REFERENCE_TOL):
    for i, (a, e) in enumerate(zip(actual, expected)):
        np.testing.assert_allclose(a, e, **tol, err_msg=f"parameter {i}")


# -- against the references ------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CASES))
def test_matches_reference(name, reference_of):
    case = reference_of(CASES[name])
    params, grads = problem(case.shapes)
    expected = case.ref(params, grads)
    for foreach in (False, None):
        actual, _ = run_momenta(case, params, grads, foreach=foreach)
        assert_params_close(actual, expected)
    initial = np.concatenate([p.ravel() for p in params])
    moved = np.concatenate([p.ravel() for p in expected])
    assert np.abs(moved - initial).max() > 1e-6  # the comparison is not vacuous


@pytest.mark.parametrize("name", [n for n, c in CASES.items() if c.schedule])
def test_a_scheduler_drives_the_learning_rate(name, reference_of):
    """torch's LambdaLR edits the group's lr every step; the reference follows the same
    schedule (its own LambdaLR, or an optax schedule of the step count)."""
    case = reference_of(CASES[name])
    params, grads = problem(case.shapes, steps=10, seed=1)
    expected = case.ref(params, grads, decaying)
    actual, opt = run_momenta(case, params, grads, decaying)
    assert_params_close(actual, expected)
    assert opt.param_groups[0]["lr"] == pytest.approx(case.kwargs.get("lr", opt.defaults["lr"]) * 0.9**10)


def test_schedule_free_eval_holds_x_and_train_gives_y_back():
    pytest.importorskip("schedulefree")
    case = CASES["schedule-free-options"]
    params, grads = problem()
    x = ref_schedule_free(params, grads, eval_=True, **case.kwargs)
    y, opt = run_momenta(case, params, grads)
    opt.eval()
    assert_params_close([p.detach().numpy() for p in opt.param_groups[0]["params"]], x)
    assert not opt.param_groups[0]["train_mode"]
    with pytest.raises(RuntimeError, match=r"eval mode.*optimizer\.train\(\)"):
        opt.step()
    opt.train()
    assert_params_close([p.detach().numpy() for p in opt.param_groups[0]["params"]], y, PATH_TOL)
    # before any step x = y = z: the switches only flip the mode
    p = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    fresh = momenta.ScheduleFreeAdamW([p])
    fresh.eval()
    fresh.train()
    assert torch.equal(p.detach(), torch.ones(3, dtype=torch.float64)) and fresh.param_groups[0]["train_mode"]


def test_ademamix_schedulers_work_on_numbers_and_tensors():
    for t in (1.0, 5.0, 10.0, 30.0):
        tensor_t = torch.tensor(t, dtype=torch.float64)
        a, b = ademamix_alpha(t, 8.0, 10.0), ademamix_beta3(t, 0.999, 0.9, 10.0)
        assert a == pytest.approx(8.0 * min(t / 10, 1.0))
        hl = lambda beta: math.log(0.5) / math.log(beta) - 1  # noqa: E731
        frac = min(t / 10, 1.0)
        expected = math.pow(0.5, 1 / ((1 - frac) * hl(0.9) + frac * hl(0.999) + 1))
        assert b == pytest.approx(expected, rel=1e-12)
        assert float(ademamix_alpha(tensor_t, torch.tensor(8.0, dtype=torch.float64), 10.0)) == pytest.approx(a)
        tensor_b = ademamix_beta3(tensor_t, torch.tensor(0.999, dtype=torch.float64), 0.9, torch.tensor(10.0))
        assert isinstance(tensor_b, torch.Tensor) and float(tensor_b) == pytest.approx(b, rel=1e-12)


# -- fast path, compiled kernels -------------------------------------------------------------


def both_paths(case: Case, foreach_values=(False, None)):
    params, grads = problem([(3, 4), (5,), (), (2, 3, 4)], steps=8, seed=2)
    return [run_momenta(case, params, grads, foreach=f) for f in foreach_values]


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_fast_path_equals_reference_path(name):
    case = CASES[name]
    opt = case.cls([torch.nn.Parameter(torch.zeros(1))], **case.kwargs)
    assert opt.rules(opt.param_groups[0]).elementwise
    (ref, ref_opt), (fast, fast_opt) = both_paths(case)
    assert_params_close(fast, ref, PATH_TOL)
    assert_states_close(fast_opt.state_dict()["state"], ref_opt.state_dict()["state"], **PATH_TOL)


@pytest.mark.parametrize("name", ["adafactor-paper-momentum"])
def test_whole_parameter_rules_run_on_the_reference_path(name):
    case = CASES[name]
    opt = case.cls([torch.nn.Parameter(torch.zeros(2, 2))], **case.kwargs)
    assert not opt.rules(opt.param_groups[0]).flat
    (ref, _), (default, _) = both_paths(case)
    assert_params_close(default, ref, dict(rtol=0, atol=0))


@pytest.mark.parametrize("name", ["lamb-options", "lars-options"])
def test_trust_ratios_run_on_flat_buffers(name):
    """Norms per parameter over flat buffers (segments): the reference path's numbers."""
    case = CASES[name]
    opt = case.cls([torch.nn.Parameter(torch.zeros(2, 2))], **case.kwargs)
    rules = opt.rules(opt.param_groups[0])
    assert not rules.elementwise and rules.flat
    (ref, ref_opt), (default, default_opt) = both_paths(case)
    assert_params_close(default, ref, PATH_TOL)
    assert_states_close(default_opt.state_dict()["state"], ref_opt.state_dict()["state"], **PATH_TOL)


def test_compiled_kernels_equal_the_reference_path(compiled_kernels):
    """The rules' math compiled with 0-dim tensor hyperparameters and step, one kernel per
    elementwise optimizer (one test: Inductor's start-up is paid once)."""
    runs, built = compiled_kernels
    counters = torch._dynamo.utils.counters["stats"]
    for name in ELEMENTWISE:
        before, builds, graphs = len(runs), len(built), counters["unique_graphs"]
        (ref, _), (fast, _) = both_paths(CASES[name])
        assert len(runs) > before and all(runs[before:]), f"{name}: no compiled kernel ran, or it fell back"
        # t, β₃(t), α(t), c_t are kernel inputs: one graph for all steps (none if an earlier
        # test compiled it), by momenta or, where torch.compile serves, by dynamo
        assert len(built) - builds <= 1 and counters["unique_graphs"] - graphs <= 1, name
        assert_params_close(fast, ref, PATH_TOL)


# -- hyperparameters, state, the torch.optim contract ------------------------------------------

OPTIMIZERS = [
    momenta.AdaBelief, momenta.Lion, momenta.LAMB, momenta.LARS, momenta.Yogi, momenta.ScheduleFreeAdamW,
    momenta.AdEMAMix, momenta.AdafactorPaper,
]  # fmt: skip


@pytest.mark.parametrize("cls", OPTIMIZERS, ids=lambda c: c.__name__)
def test_constructor_is_torch_style(cls):
    sig = inspect.signature(cls.__init__)
    names = list(sig.parameters)
    assert names[:3] == ["self", "params", "lr"]
    engine = ["nonfinite", "state_precision", "param_rounding"]  # the engine's, keyword-only, off
    assert names[-3:] == engine
    assert all(sig.parameters[n].kind is inspect.Parameter.KEYWORD_ONLY and sig.parameters[n].default is None for n in engine)
    assert sig.parameters["foreach"].default is None and sig.parameters["maximize"].default is False
    assert "weight_decay" in names
    opt = cls([torch.nn.Parameter(torch.zeros(2))])
    group = opt.param_groups[0]
    for name, parameter in sig.parameters.items():  # every hyperparameter lives in the groups
        if name not in ("self", "params", *engine):
            expected = parameter.default if not (cls is momenta.AdafactorPaper and name == "beta1") else 0.0
            assert group[name] == expected, name
    doc = inspect.getdoc(cls) or ""
    assert doc.index("Args:") < doc.index("Source:")  # formulas first, then Args, then Source
    assert "arXiv:" in doc.split("Source:")[1] or cls is momenta.Yogi  # Yogi has no arXiv version


BAD = [
    (momenta.AdaBelief, dict(lr=-1.0), ValueError, "Invalid learning rate: -1.0"),
    (momenta.AdaBelief, dict(lr="big"), TypeError, "Invalid learning rate: 'big'"),
    (momenta.AdaBelief, dict(betas=(1.0, 0.999)), ValueError, "Invalid beta parameter at index 0: 1.0"),
    (momenta.AdaBelief, dict(eps=-1e-8), ValueError, "Invalid epsilon value: -1e-08"),
    (momenta.AdaBelief, dict(weight_decay=-0.1), ValueError, "Invalid weight_decay value: -0.1"),
    (momenta.Lion, dict(betas=(0.9, 1.5)), ValueError, "Invalid beta parameter at index 1: 1.5"),
    (momenta.Lion, dict(betas=(0.9,)), ValueError, r"Invalid betas: \(0.9,\)"),
    (momenta.LAMB, dict(eps=float("nan")), ValueError, "Invalid epsilon value: nan"),
    (momenta.LARS, dict(momentum=-0.1), ValueError, "Invalid momentum value: -0.1"),
    (momenta.LARS, dict(trust_coefficient=-1.0), ValueError, "Invalid trust_coefficient value: -1.0"),
    (momenta.Yogi, dict(initial_accumulator=-1.0), ValueError, "Invalid initial_accumulator value: -1.0"),
    (momenta.ScheduleFreeAdamW, dict(warmup_steps=-1), ValueError, "Invalid warmup_steps value: -1"),
    (momenta.ScheduleFreeAdamW, dict(warmup_steps=2.5), ValueError, "Invalid warmup_steps value: 2.5"),
    (momenta.ScheduleFreeAdamW, dict(r=-1.0), ValueError, "Invalid r value: -1.0"),
    (momenta.ScheduleFreeAdamW, dict(weight_lr_power=-2.0), ValueError, "Invalid weight_lr_power value: -2.0"),
    (momenta.AdEMAMix, dict(beta3=1.0), ValueError, "Invalid beta3 value: 1.0"),
    (momenta.AdEMAMix, dict(alpha=-1.0), ValueError, "Invalid alpha value: -1.0"),
    (momenta.AdEMAMix, dict(alpha_warmup=0), ValueError, "Invalid alpha_warmup value: 0"),
    (momenta.AdEMAMix, dict(beta3_warmup=10.5), ValueError, "Invalid beta3_warmup value: 10.5"),
    (momenta.AdEMAMix, dict(betas=(0.9, 0.999, 0.9999)), ValueError, "beta3 on its own"),
    (momenta.AdEMAMix, dict(betas=(0.0, 0.999), beta3_warmup=10), ValueError, "starts at beta1"),
    (momenta.AdafactorPaper, dict(clip_threshold=0.0), ValueError, "Invalid clip_threshold value: 0.0"),
    (momenta.AdafactorPaper, dict(decay_rate=0.5), ValueError, "Invalid decay_rate value: 0.5"),
    (momenta.AdafactorPaper, dict(eps1=-1.0), ValueError, "Invalid eps1 value: -1.0"),
    (momenta.AdafactorPaper, dict(eps2=-1.0), ValueError, "Invalid eps2 value: -1.0"),
    (momenta.AdafactorPaper, dict(beta1=1.0), ValueError, "Invalid beta1 value: 1.0"),
    (momenta.Lion, dict(nonfinite="ignore"), ValueError, "Invalid nonfinite: 'ignore'"),
]


@pytest.mark.parametrize("cls,kwargs,error,message", BAD, ids=lambda x: getattr(x, "__name__", None))
def test_bad_hyperparameters_are_refused_by_name(cls, kwargs, error, message):
    with pytest.raises(error, match=message):
        cls([torch.nn.Parameter(torch.zeros(2))], **kwargs)


def test_a_bad_value_set_in_a_group_is_refused_at_the_step():
    p = torch.nn.Parameter(torch.zeros(2))
    opt = momenta.AdEMAMix([p])
    opt.param_groups[0]["beta3"] = 1.5  # a user, or a scheduler of beta3
    p.grad = torch.ones(2)
    with pytest.raises(ValueError, match="Invalid beta3 value: 1.5"):
        opt.step()
    assert torch.equal(p.detach(), torch.zeros(2)) and not opt.state


STATE_KEYS = {
    momenta.AdaBelief: {"step", "exp_avg", "exp_avg_var"},
    momenta.Lion: {"exp_avg"},
    momenta.LAMB: {"step", "exp_avg", "exp_avg_sq"},
    momenta.LARS: {"momentum_buffer"},
    momenta.Yogi: {"step", "exp_avg", "exp_avg_sq"},
    momenta.ScheduleFreeAdamW: {"step", "lr_max", "weight_sum", "z", "exp_avg_sq"},
    momenta.AdEMAMix: {"step", "exp_avg_fast", "exp_avg_slow", "exp_avg_sq"},
    momenta.AdafactorPaper: {"step", "exp_avg_sq_row", "exp_avg_sq_col"},  # a matrix; vectors keep exp_avg_sq
}


@pytest.mark.parametrize("cls", OPTIMIZERS, ids=lambda c: c.__name__)
def test_state_dict_round_trip(cls):
    """Five steps, a state_dict saved (weights_only), loaded into a fresh optimizer on copies
    of the parameters; five more steps on both give the same numbers, bit for bit. Float32
    parameters: the schedule-free averaging weights stay float64 through the load."""
    params, grads = problem([(3, 4), (5,)], steps=10, seed=3)
    kwargs = dict(weight_decay=0.1)
    ps = [torch.nn.Parameter(torch.tensor(x, dtype=torch.float32)) for x in params]
    opt = cls(ps, **kwargs)

    def steps(opt, ps, gs):
        for g_step in gs:
            for p, g in zip(ps, g_step):
                p.grad = torch.tensor(g, dtype=torch.float32)
            opt.step()

    steps(opt, ps, grads[:5])
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    assert set(saved["state"][0]) == STATE_KEYS[cls]
    copies = [torch.nn.Parameter(p.detach().clone()) for p in ps]
    other = cls(copies, **kwargs)
    other.load_state_dict(saved)
    assert_states_close(other.state_dict()["state"], opt.state_dict()["state"])
    if cls is momenta.ScheduleFreeAdamW:
        assert all(other.state[p][k].dtype == torch.float64 for p in copies for k in ("lr_max", "weight_sum"))
    steps(opt, ps, grads[5:])
    steps(other, copies, grads[5:])
    for a, b in zip(copies, ps):
        assert torch.equal(a.detach(), b.detach())
    assert_states_close(other.state_dict()["state"], opt.state_dict()["state"])


@pytest.mark.parametrize("cls", OPTIMIZERS, ids=lambda c: c.__name__)
def test_maximize_ascends_along_the_gradient(cls):
    params, grads = problem([(3, 4), (5,)], steps=4, seed=4)
    up, _ = run_torch(lambda ps: cls(ps, maximize=True, weight_decay=0.1), params, grads)
    down, _ = run_torch(lambda ps: cls(ps, weight_decay=0.1), params, [[-g for g in gs] for gs in grads])
    assert_params_close(up, down, dict(rtol=0, atol=0))


def test_adafactor_paper_refuses_complex_parameters():
    p = torch.nn.Parameter(torch.zeros(2, 2, dtype=torch.complex64))
    opt = momenta.AdafactorPaper([p])
    p.grad = torch.ones(2, 2, dtype=torch.complex64)
    with pytest.raises(RuntimeError, match="AdafactorPaper does not support complex parameters"):
        opt.step()
