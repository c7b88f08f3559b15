"""Low-precision optimizer state (``state_precision``) and rounded bfloat16 weights
(``param_rounding``) on every optimizer: what the state holds, how close it stays to the
full-precision run, checkpoints (``weights_only``, resume bit for bit, conversion both ways),
and bad input (issue 14). The codecs themselves: ``tests/test_precision.py``."""

from __future__ import annotations

import io
from typing import Any

import pytest
import torch

import momenta
import momenta.seed
from momenta.engine import storage

# every optimizer class: torch's drop-ins, the modern ones, the seed's five
OPTIMIZERS: dict[str, Any] = {
    **{n: getattr(momenta, n) for n in [
        "ASGD", "AdEMAMix", "AdaBelief", "Adadelta", "Adafactor", "AdafactorPaper", "Adagrad", "Adam",
        "AdamW", "Adamax", "LAMB", "LARS", "Lion", "Muon", "MuonWithAdamW", "NAdam", "RAdam",
        "RMSprop", "Rprop", "SGD", "ScheduleFreeAdamW", "Yogi",
    ]},  # fmt: skip
    **{f"seed.{n}": getattr(momenta.seed, n) for n in ["SGD", "SGDM", "Adagrad", "RMSProp", "Adam"]},
}
LR = {"Adadelta": 1.0, "Muon": 0.02, "MuonWithAdamW": 0.02, "seed.SGD": 0.01, "seed.SGDM": 0.01}
EXTRA: dict[str, dict[str, Any]] = {"SGD": {"momentum": 0.9}, "RMSprop": {"centered": True}}
PRECISIONS = ("bf16", "int8", "int4")


def _make(name: str, params: Any, **kw: Any) -> momenta.Optimizer:
    return OPTIMIZERS[name](params, lr=LR.get(name, 1e-3), **EXTRA.get(name, {}), **kw)  # type: ignore[no-any-return]


def _params(dtype: torch.dtype = torch.float32) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(0)
    # a matrix above storage.SMALL (its state is stored narrow) and one below (it is not)
    return [
        torch.nn.Parameter(torch.randn(64, 80, generator=g).to(dtype)),
        torch.nn.Parameter(torch.randn(16, 8, generator=g).to(dtype)),
    ]


def _run(name: str, steps: int, resume_at: int | None = None, **kw: Any) -> tuple[list[torch.Tensor], dict[str, Any]]:
    params = _params(kw.pop("dtype", torch.float32))
    opt = _make(name, params, **kw)
    g = torch.Generator().manual_seed(1)
    for i in range(steps):
        if i == resume_at:  # a fresh optimizer, from a state_dict saved through bytes
            buffer = io.BytesIO()
            torch.save({"params": [p.detach() for p in params], "opt": opt.state_dict()}, buffer)
            buffer.seek(0)
            saved = torch.load(buffer, weights_only=True)
            params = [torch.nn.Parameter(t.clone()) for t in saved["params"]]
            opt = _make(name, params, **kw)
            opt.load_state_dict(saved["opt"])
        for p in params:
            p.grad = (torch.randn(p.shape, generator=g) + 0.2).to(p.dtype)
        opt.step()
    return [p.detach().clone() for p in params], opt.state_dict()


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_optimizer_at_every_precision(name: str, precision: str) -> None:
    """The state of the large parameter holds each coded (or bf16) buffer the rules allow,
    the small one's stays float32; a resume through ``weights_only`` bytes is bit-exact; and
    the weights stay near the float32 run's."""
    full, _ = _run(name, 5)
    narrow, sd = _run(name, 5, state_precision=precision)
    resumed, sd2 = _run(name, 5, resume_at=2, state_precision=precision)
    for a, b in zip(narrow, resumed):
        assert torch.equal(a, b)
    big, small = sd["state"][0], sd["state"][1]
    opt = _make(name, _params(), state_precision=precision)
    rules = opt.rules(opt.param_groups[0])
    shaped = {n for n in rules.buffers() if n in big and big[n].shape == (64, 80)}
    expected = sorted(n for n in rules.buffers() if (n in shaped and n not in rules.exact) or f"{n}_codes" in big)
    for n in expected:
        if precision == "bf16":
            assert big[n].dtype == torch.bfloat16
        else:
            assert big[f"{n}_codes"].dtype == torch.uint8 and big[f"{n}_scales"].dtype == torch.float32
            assert n not in big
    for n in rules.exact & set(big):
        assert big[n].dtype == torch.float32
    assert all(v.dtype != torch.uint8 and v.dtype != torch.bfloat16 for v in small.values())
    for k, v in sd2["state"][0].items():
        assert torch.equal(v, sd["state"][0][k]), k
    moved = (full[0] - _params()[0]).norm()
    drift = (narrow[0] - full[0]).norm() / moved
    assert torch.isfinite(narrow[0]).all()
    assert drift < {"bf16": 0.05, "int8": 0.2, "int4": 1.0}[precision], float(drift)


def test_int8_adamw_stays_close_and_bf16_state_does_not_stall() -> None:
    """int8 AdamW after 50 steps lands within 3% of float32's movement (the codecs' accuracy
    against bitsandbytes and torchao: benchmarks/bench_lowbit_accuracy.py); a bf16 EMA of
    increments far below half an ulp still moves (stochastic rounding), as float32's does."""
    full, _ = _run("AdamW", 50)
    int8, _ = _run("AdamW", 50, state_precision="int8")
    moved = (full[0] - _params()[0]).norm()
    assert (int8[0] - full[0]).norm() / moved < 0.03
    p = torch.nn.Parameter(torch.zeros(64, 64))
    opt = momenta.SGD([p], lr=0.0, momentum=0.999, dampening=0.999, state_precision="bf16")
    p.grad = torch.ones(64, 64)
    opt.step()  # torch's first step: m = g = 1
    for _ in range(200):
        # m ← 0.999·m + 0.001·2: increments of 0.001, below half an ulp of bf16 at 1 (0.0039),
        # which round-to-nearest would lose every time, leaving m at 1
        p.grad = torch.full((64, 64), 2.0)
        opt.step()
    m = opt.state[p]["momentum_buffer"]
    assert m.dtype == torch.bfloat16
    assert abs(float(m.float().mean()) - (2 - 0.999**200)) < 0.01


def test_conversion_torch_to_int8_and_back() -> None:
    """A torch.optim state_dict loads into an int8 optimizer (coded on load); an int8 one
    loads into a float32 optimizer (decoded); each continues."""
    params = _params()
    ref = torch.optim.AdamW(params, lr=1e-3)
    for p in params:
        p.grad = torch.randn(p.shape)
    ref.step()
    coded = momenta.AdamW(params, lr=1e-3, state_precision="int8")
    coded.load_state_dict(ref.state_dict())
    assert coded.param_groups[0]["state_precision"] == "int8"
    s = coded.state[params[0]]
    assert sorted(s) == ["exp_avg_codes", "exp_avg_scales", "exp_avg_sq_codes", "exp_avg_sq_scales", "step"]
    assert sorted(coded.state[params[1]]) == ["exp_avg", "exp_avg_sq", "step"]  # small: float32
    back = momenta.AdamW(params, lr=1e-3)
    back.load_state_dict(coded.state_dict())
    assert "state_precision" not in back.param_groups[0]
    m, m_ref = back.state[params[0]]["exp_avg"], ref.state[params[0]]["exp_avg"]
    assert m.dtype == torch.float32 and m.shape == m_ref.shape
    assert (m - m_ref).abs().max() <= 0.02 * m_ref.abs().max()
    for opt in (coded, back):
        opt.step()


def test_a_coded_state_dict_is_checked_before_loading() -> None:
    params = _params()
    opt = momenta.AdamW(params, state_precision="int8")
    for p in params:
        p.grad = torch.randn(p.shape)
    opt.step()
    sd = opt.state_dict()
    sd["state"][0]["exp_avg_codes"] = sd["state"][0]["exp_avg_codes"][:-1]
    other = momenta.AdamW(params, state_precision="int8")
    with pytest.raises(ValueError, match="exp_avg_codes"):
        other.load_state_dict(sd)
    assert not other.state


@pytest.mark.parametrize("rounding", ["stochastic", "compensated"])
def test_bf16_weights_rounded_stochastically_or_compensated_track_float32(rounding: str) -> None:
    """AdamW steps of 1e-4 on bfloat16 weights near 4 (half an ulp there is 0.0078):
    round-to-nearest loses every one; stochastic rounding keeps them on average (the mean
    displacement is float32's), a compensation buffer keeps them exactly (``p + c``)."""
    g = torch.Generator().manual_seed(0)
    start = (torch.randn(64, 64, generator=g) + 4).to(torch.bfloat16).float()  # exact in bf16
    w32 = torch.nn.Parameter(start.clone())
    runs = {r: torch.nn.Parameter(start.to(torch.bfloat16)) for r in ("nearest", rounding)}
    opts = {r: momenta.AdamW([p], lr=1e-4, param_rounding=r, state_precision="fp32") for r, p in runs.items()}
    ref = momenta.AdamW([w32], lr=1e-4)
    for _ in range(100):
        grad = torch.randn(64, 64, generator=g) + 1
        w32.grad = grad
        ref.step()
        for r, p in runs.items():
            p.grad = grad.to(torch.bfloat16)
            opts[r].step()
    moved = float((w32.detach() - start).mean())  # about −0.01
    assert float((runs["nearest"].detach().float() - start).mean()) == 0.0
    p = runs[rounding].detach().float()
    if rounding == "stochastic":
        assert abs(float((p - start).mean()) / moved - 1) < 0.05
    else:  # the weights the step computes on: p + c
        held = p + opts[rounding].state[runs[rounding]]["compensation"].float()
        # to the rounding of the bf16 gradients and of p + c (16 bits)
        err = (held - w32.detach()).abs().mean() / (w32.detach() - start).abs().mean()
        assert float(err) < 0.05


def test_stochastic_rounding_depends_on_the_seed_and_resumes() -> None:
    """Two seeds round differently; the seed and the count of rounding steps are in the
    state_dict, so a resumed run rounds as the uninterrupted one."""
    def run(seed: int, resume: bool) -> torch.Tensor:
        torch.manual_seed(seed)
        p = torch.nn.Parameter(torch.ones(64, 64, dtype=torch.bfloat16))
        opt = momenta.SGD([p], lr=1e-3, param_rounding="stochastic")
        for i in range(4):
            if resume and i == 2:
                sd = opt.state_dict()
                torch.manual_seed(seed + 100)  # another initial seed: the state_dict's wins
                opt = momenta.SGD([p], lr=1e-3, param_rounding="stochastic")
                opt.load_state_dict(sd)
            p.grad = torch.full((64, 64), 0.3, dtype=torch.bfloat16)
            opt.step()
        return p.detach().clone()

    assert torch.equal(run(1, False), run(1, True))
    assert not torch.equal(run(1, False), run(2, False))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"state_precision": "int3"}, "Invalid state_precision: 'int3'"),
        ({"state_precision": {"exp_avgg": "int8"}}, "no state buffer 'exp_avgg'"),
        ({"state_precision": {"exp_avg": "fp8"}}, "Invalid state_precision"),
        ({"param_rounding": "stochastic"}, "Invalid param_rounding: 'stochastic'.*torch.float32"),
        ({"param_rounding": "up"}, "Invalid param_rounding: 'up'"),
    ],
)
def test_bad_input_is_refused_at_construction(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        momenta.AdamW(_params(), **kwargs)


def test_coded_state_on_a_complex_parameter_is_refused() -> None:
    p = torch.nn.Parameter(torch.randn(64, 64, dtype=torch.complex64))
    with pytest.raises(ValueError, match="Invalid state_precision: 'int8'.*complex"):
        momenta.AdamW([p], state_precision="int8")
    opt = momenta.AdamW([torch.nn.Parameter(torch.randn(3))])
    with pytest.raises(ValueError, match="complex"):
        opt.add_param_group({"params": [p], "state_precision": "int4"})
    assert len(opt.param_groups) == 1  # refused: nothing changed


def test_default_groups_keep_torchs_keys() -> None:
    """Without the arguments, param groups and state_dicts are torch's exactly."""
    opt = momenta.AdamW(_params())
    assert set(opt.param_groups[0]) == set(torch.optim.AdamW(_params()).param_groups[0])
    assert "rounding" not in opt.state_dict()


def test_exact_buffers_and_small_parameters_stay_full_precision() -> None:
    rprop = momenta.Rprop(_params())
    assert storage.Storage.of({"state_precision": "int8"}, rprop.rules(rprop.param_groups[0]), _params()[0]) is None
    rules = momenta.AdamW(_params()).rules(momenta.AdamW(_params()).param_groups[0])
    assert storage.Storage.of({"state_precision": "int8"}, rules, torch.zeros(4095)) is None
    kept = storage.Storage.of({"state_precision": "int8"}, rules, torch.zeros(4096))
    assert kept is not None and {s.name: s.signed for s in kept.stored} == {"exp_avg": True, "exp_avg_sq": False}


# -- the fast path ------------------------------------------------------------------------

ELEMENTWISE = [n for n in sorted(OPTIMIZERS) if n not in ("Muon", "MuonWithAdamW", "Adafactor", "AdafactorPaper", "LAMB", "LARS")]


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("name", ELEMENTWISE)
def test_fast_path_equals_the_reference_path(name: str, precision: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Flat buffers of codes (eager kernels) step exactly as the reference path, one
    parameter at a time: same blocks, same codes, same scales, to the bit."""
    from momenta.engine import kernels

    monkeypatch.setattr(kernels.config, "compile", False)
    runs = []
    for flat in (False, True):
        monkeypatch.setattr(kernels.config, "flat", flat)
        runs.append(_run(name, 4, state_precision=precision))
    (p_ref, sd_ref), (p_flat, sd_flat) = runs
    for a, b in zip(p_ref, p_flat):
        assert torch.equal(a, b)
    for i, entry in sd_ref["state"].items():
        for k, v in entry.items():
            assert torch.equal(v, sd_flat["state"][i][k]), (i, k)


@pytest.mark.parametrize(
    ("name", "kw"),
    [
        ("AdamW", {"state_precision": "int8"}),
        ("AdamW", {"state_precision": "int4"}),
        ("Lion", {"state_precision": "int8"}),
        ("SGD", {"state_precision": "bf16"}),
        ("Adagrad", {"state_precision": {"sum": "int8"}}),
        ("AdamW", {"dtype": torch.bfloat16, "param_rounding": "stochastic", "state_precision": "fp32"}),
        ("AdamW", {"dtype": torch.bfloat16, "param_rounding": "compensated", "state_precision": "int8"}),
    ],
)
def test_compiled_kernels_of_coded_states_agree_with_eager(name: str, kw: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """The compiled kernel (decode, update, encode in one loop) against the eager formula:
    the same to float32 rounding, which may move a value across a code's or a rounding's
    boundary now and then (a code step), never more."""
    from momenta.engine import kernels

    monkeypatch.setattr(kernels.config, "compile_min_numel", 1024)
    runs = []
    for compiled in (False, True):
        monkeypatch.setattr(kernels.config, "compile", compiled)
        runs.append(_run(name, 4, **dict(kw)))
    (eager, sd_eager), (compiled_, sd) = runs

    def weights(ps: list[torch.Tensor], sd: dict[str, Any]) -> torch.Tensor:
        w = ps[0].float()  # compensated: the weights are p + c (p alone rounds either way)
        return w + sd["state"][0]["compensation"].float() if "compensation" in sd["state"][0] else w

    moved = (weights(eager, sd_eager) - _params(kw.get("dtype", torch.float32))[0].float()).norm()
    assert (weights(compiled_, sd) - weights(eager, sd_eager)).norm() <= 0.02 * moved
    if kw.get("state_precision") in ("int8", "int4"):
        assert sd["state"][0]  # the large parameter's state is coded
        assert any(k.endswith("_codes") for k in sd["state"][0])


_RESUME = r"""
import sys, torch, momenta
from momenta.engine import kernels
assert kernels.config.compile_min_numel == 1024
mode, path, kind = sys.argv[1], sys.argv[2], sys.argv[3]
kw = {"int8": dict(state_precision="int8"), "int4": dict(state_precision="int4"),
      "bf16": dict(state_precision="bf16"), "sr": dict(param_rounding="stochastic", state_precision="int8")}[kind]
dtype = torch.bfloat16 if kind == "sr" else torch.float32
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 64)).to(dtype)
def batches(i):
    g = torch.Generator().manual_seed(100 + i)
    return torch.randn(32, 64, generator=g).to(dtype), torch.randn(32, 64, generator=g).to(dtype)
def loop(opt, steps):
    for i in steps:
        x, y = batches(i)
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
opt = momenta.AdamW(model.parameters(), lr=1e-2, **kw)
if mode == "whole":
    loop(opt, range(6))
elif mode == "first":
    loop(opt, range(3))
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, path)
    sys.exit(0)
else:
    saved = torch.load(path, weights_only=True)
    model.load_state_dict(saved["model"])
    opt.load_state_dict(saved["opt"])
    loop(opt, range(3, 6))
torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, path + ".out")
"""


@pytest.mark.parametrize("kind", ["int8", "sr"])  # int4 and bf16: in-process resume above
def test_resume_in_a_fresh_process_is_bit_exact_on_the_compiled_path(kind: str, tmp_path: Any) -> None:
    """Six steps of a real loop (fresh gradients, clipping, zero_grad) against three, a save,
    a load in a new process and three more: the same weights and the same codes, to the bit,
    with compiled kernels (the model's ~16k parameters are above the lowered threshold)."""
    import os
    import subprocess
    import sys

    script = tmp_path / "resume.py"
    script.write_text(_RESUME)
    env = {**os.environ, "MOMENTA_COMPILE_MIN_NUMEL": "1024"}

    def run(mode: str, path: str) -> None:
        subprocess.run([sys.executable, str(script), mode, path, kind], check=True, env=env, timeout=600)

    whole, part = str(tmp_path / "whole.pt"), str(tmp_path / "part.pt")
    run("whole", whole)
    run("first", part)
    run("second", part)
    a, b = torch.load(whole + ".out", weights_only=True), torch.load(part + ".out", weights_only=True)
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    for i, entry in a["opt"]["state"].items():
        for k, v in entry.items():
            assert torch.equal(v, b["opt"]["state"][i][k]), (i, k)
    coded = [k for entry in a["opt"]["state"].values() for k in entry if k.endswith("_codes")]
    assert coded if kind != "bf16" else not coded


# -- an optimizer of your own (README's "Your own optimizer") -----------------------------


def _readme_adabelief() -> type:
    from dataclasses import dataclass

    from momenta.rules import EMA, SecondMoment

    @dataclass(frozen=True)
    class BeliefSq(SecondMoment):
        beta: float = 0.999
        formula = "s = β·s + (1−β)·(g − m)², ŝ = s/(1−βᵗ)"
        needs_step = True

        def init(self, p: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"exp_avg_var": torch.zeros_like(p)}

        def update(self, state: Any, g: torch.Tensor, m: Any, t: Any) -> Any:
            s = self.beta * state["exp_avg_var"] + (1 - self.beta) * (g - m) ** 2
            return s, {"exp_avg_var": s}

        def correction(self, t: Any) -> Any:
            return 1 - self.beta**t

    class AdaBelief(momenta.Optimizer):
        def __init__(self, params: Any, lr: float = 1e-3, betas: Any = (0.9, 0.999), eps: float = 1e-16) -> None:
            super().__init__(params, dict(lr=lr, betas=betas, eps=eps))

        def rules(self, group: dict[str, Any]) -> momenta.Rules:
            beta1, beta2 = group["betas"]
            return momenta.Rules(EMA(beta1, bias_correction=True), BeliefSq(beta2))

    return AdaBelief


@pytest.mark.parametrize("precision", PRECISIONS)
def test_an_optimizer_of_your_own_takes_state_precision_as_a_group_key(precision: str) -> None:
    """README's AdaBelief, whose constructor knows nothing of precision: the param group's
    ``state_precision`` codes its buffers too (its own V-like buffer unsigned, as a
    second-moment rule's)."""
    cls = _readme_adabelief()
    runs = {}
    for key in (None, precision):
        params = _params()
        group: dict[str, Any] = {"params": params}
        if key is not None:
            group["state_precision"] = key
        opt = cls([group], lr=1e-3)
        g = torch.Generator().manual_seed(1)
        for _ in range(20):
            for p in params:
                p.grad = torch.randn(p.shape, generator=g) + 0.2
            opt.step()
        runs[key] = params[0].detach().clone(), opt.state[params[0]]
    (full, _), (narrow, state) = runs[None], runs[precision]
    if precision == "bf16":
        assert state["exp_avg_var"].dtype == torch.bfloat16
    else:
        assert state["exp_avg_var_codes"].dtype == torch.uint8 and "exp_avg_var" not in state
    moved = (full - _params()[0]).norm()
    assert (narrow - full).norm() / moved < {"bf16": 0.05, "int8": 0.1, "int4": 0.5}[precision]


@pytest.mark.parametrize("flat", [True, False])
def test_a_changed_state_precision_converts_the_state(flat: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """A user sets a group's ``state_precision`` between steps: the states are converted
    (coded, then decoded back) before the next step reads them, and a bad value is refused
    at that step, before anything changes."""
    from momenta.engine import kernels

    monkeypatch.setattr(kernels.config, "flat", flat)
    params, twins = _params(), _params()
    opt, twin = momenta.AdamW(params, lr=1e-3), momenta.AdamW(twins, lr=1e-3)  # twin: float32 throughout
    g = torch.Generator().manual_seed(0)

    def step() -> None:
        for p, q in zip(params, twins):
            p.grad = torch.randn(p.shape, generator=g)
            q.grad = p.grad.clone()
        opt.step()
        twin.step()

    step()
    opt.param_groups[0]["state_precision"] = "int8"
    step()
    assert sorted(opt.state[params[0]]) == ["exp_avg_codes", "exp_avg_scales", "exp_avg_sq_codes", "exp_avg_sq_scales", "step"]
    del opt.param_groups[0]["state_precision"]
    step()
    assert sorted(opt.state[params[0]]) == ["exp_avg", "exp_avg_sq", "step"]
    m, m_twin = opt.state[params[0]]["exp_avg"], twin.state[twins[0]]["exp_avg"]
    assert (m - m_twin).abs().max() < 0.05 * m_twin.abs().max()  # one int8 step's coding error
    opt.param_groups[0]["state_precision"] = "int3"
    before = [p.detach().clone() for p in params]
    with pytest.raises(ValueError, match="Invalid state_precision: 'int3'"):
        opt.step()
    assert all(torch.equal(a, b) for a, b in zip(before, params))
