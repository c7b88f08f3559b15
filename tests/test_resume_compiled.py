"""Resume is bit-exact on the compiled fast path, in a fresh process.

A checkpoint resumed in a new process must continue *exactly* as the uninterrupted run
would have: the same parameters and the same state, bit for bit (``torch.equal``), not just
to a tolerance. On the compiled path that holds only if every step after a
``load_state_dict`` runs the same code as the uninterrupted run's step would have: a first
step after adoption run eagerly where the uninterrupted run used the compiled kernel
differs by the rounding of Inductor's fused multiply-adds (up to ~5e-7 after a few steps).
The tiny models of ``test_torch_contract.py``'s resume test never compile; these do.

For every elementwise optimizer on the fast path (torch's drop-ins, the modern ones and the
seed's five), a small MLP (64 → 128 → 64 plus a 64 × 64 side layer, biases; nanoGPT's two
param groups: weight decay 0.1 on ≥ 2-D parameters and 0 on the rest where the optimizer
has weight decay) trains in a real loop (forward, backward, ``clip_grad_norm_(1.0)``,
``step``, ``zero_grad``) on deterministic batches, float32, in both ``zero_grad`` modes
(``set_to_none=True``: fresh gradients each step; ``False``: gradients zeroed in place):

(a) *fresh-process resume*: process A runs 6 steps and saves the model and the optimizer's
    state_dict after step 3 (``torch.save``); process B, fresh, builds the model, loads both
    (``torch.load(weights_only=True)``) and runs steps 4-6 on the same batches. Final
    parameters, every state tensor and the param groups equal A's uninterrupted run's;
(b) *every step is a first step*: in A, the optimizer is rebuilt after every step (a new
    optimizer, ``load_state_dict`` of the previous one's ``state_dict()``), once over the
    same parameters ("same") and once over a copy of the model with the state_dict saved
    and loaded through bytes ("copy", a fresh process's resume without the process); both
    equal the uninterrupted run bit for bit;
(c) *a parameter without a gradient*: the side layer is left out of the forward pass in
    steps 2 and 5. With ``set_to_none=True`` it has no gradient then and must be skipped as
    torch skips it (its values and state unchanged by that step); the run matches torch's
    twin for the drop-ins (torch.optim, its default implementation) and momenta's for-loop
    (``foreach=False``) for the modern ones, to float32 rounding (parameters: rtol 1e-6, atol
    1e-7; state: atol also 1e-6 of the tensor's largest magnitude, see ``_near_state``); the
    seed's five have no twin. With ``set_to_none=False`` the side layer's gradient is zeros
    and it is stepped, as torch steps it. Either way, its resume in a fresh process is
    bit-exact as in (a).

The compiled path is really taken: the subprocesses run with ``MOMENTA_COMPILE_MIN_NUMEL``
small (4096; the model has ~21k parameters, so the ≥ 2-D group's bucket, and with an
engine that counts all of an optimizer's flat parameters every bucket, is compiled), and
the checked signal is a run-time one: ``torch.profiler`` records a "Torch-Compiled Region"
event whenever code compiled by ``torch.compile`` executes. Nothing else in these loops is
compiled (the model runs eagerly), so such an event during ``opt.step()`` means momenta ran
a compiled kernel in that step. The last step of every (a) run, in A and in B, must show
one; which steps did is printed on failure. ``torch._dynamo.utils.counters`` (graphs
compiled) only says that something was compiled at some point, not that the compared steps
ran it. A RuntimeWarning from momenta (kernels off, a compilation that failed and fell back
to eager) fails the check too.

Cost: the subprocesses pay torch's import and, per process, one compilation per kernel
structure (a few seconds each, ~15 s for the first with a cold Inductor cache), so each
test runs a chunk of optimizers through one process A and one process B. Results are
reported per optimizer and check (pytest's ``subtests`` where available, else one message
listing every failure of the chunk).

Run as a script, this file is the subprocesses' worker:
``python test_resume_compiled.py {A,B} OUTDIR NAME...``.
"""

from __future__ import annotations

import copy
import io
import os
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

#: the subprocesses' environment: small buckets compile, one compile thread and one OpenMP
#: thread each (two xdist workers on two cores; A and B must run with the same settings)
ENV = {
    "MOMENTA_FLAT": "1",
    "MOMENTA_COMPILE": "1",
    "MOMENTA_COMPILE_MIN_NUMEL": "4096",
    "TORCHINDUCTOR_COMPILE_THREADS": "1",
    "OMP_NUM_THREADS": "1",
}

STEPS = 6
CHECKPOINT = 3  # A saves after this step; B runs the steps after it
SKIPPED = (2, 5)  # steps of scenario (c) where the side layer gets no gradient
MODES = {"none": True, "zero": False}  # zero_grad(set_to_none=...)
RTOL, ATOL = 1e-6, 1e-7  # (c) against the twin: float32 rounding (state: see _near_state)
COMPILED_EVENTS = ("Torch-Compiled Region", "CompiledFxGraph")


class Spec(NamedTuple):
    """One optimizer: ``cls`` is ``momenta.<cls>`` (``seed.X``: ``momenta.seed.X``)."""

    cls: str
    kwargs: dict[str, Any]
    decay: bool  # has weight_decay: nanoGPT's groups (0.1 on >= 2-D, 0 on the rest)
    twin: str | None  # "torch": torch.optim.<cls>; "foreach": momenta's for-loop; None


SPECS: dict[str, Spec] = {
    "SGD-momentum": Spec("SGD", dict(lr=1e-2, momentum=0.9), True, "torch"),
    "SGD": Spec("SGD", dict(lr=1e-2), True, "torch"),
    "Adam": Spec("Adam", dict(lr=1e-3), True, "torch"),
    "AdamW": Spec("AdamW", dict(lr=1e-3), True, "torch"),
    "Adagrad": Spec("Adagrad", dict(lr=1e-2), True, "torch"),
    "RMSprop": Spec("RMSprop", dict(lr=1e-3), True, "torch"),
    # lr 1e-4: its updates are ~lr·10 per step from the first (g/√(v − avg²) is O(10))
    "RMSprop-centered-momentum": Spec("RMSprop", dict(lr=1e-4, centered=True, momentum=0.9), True, "torch"),
    "Adamax": Spec("Adamax", dict(lr=2e-3), True, "torch"),
    "NAdam": Spec("NAdam", dict(lr=2e-3), True, "torch"),
    "RAdam": Spec("RAdam", dict(lr=1e-3), True, "torch"),  # rectified from step 6 on
    "Adadelta": Spec("Adadelta", dict(lr=1.0), True, "torch"),
    "ASGD": Spec("ASGD", dict(lr=1e-2), True, "torch"),
    "Rprop": Spec("Rprop", dict(lr=1e-3), False, "torch"),
    "Lion": Spec("Lion", dict(lr=1e-4), True, "foreach"),
    "AdaBelief": Spec("AdaBelief", dict(lr=1e-3), True, "foreach"),
    "Yogi": Spec("Yogi", dict(lr=1e-3), True, "foreach"),
    "AdEMAMix": Spec("AdEMAMix", dict(lr=1e-3, alpha_warmup=4, beta3_warmup=4), True, "foreach"),
    "ScheduleFreeAdamW": Spec("ScheduleFreeAdamW", dict(lr=1e-3, warmup_steps=2), True, "foreach"),
    "seed.SGD": Spec("seed.SGD", dict(lr=1e-2), False, None),
    "seed.SGDM": Spec("seed.SGDM", dict(lr=1e-2), False, None),
    "seed.Adagrad": Spec("seed.Adagrad", dict(lr=1e-2), False, None),
    "seed.RMSProp": Spec("seed.RMSProp", dict(lr=1e-3), False, None),
    "seed.Adam": Spec("seed.Adam", dict(lr=1e-3), False, None),
}

#: one pytest item (one process A, one process B) per chunk; four chunks of about equal
#: cost keep both xdist workers busy while paying each process's start-up only four times
CHUNKS = [
    ["SGD-momentum", "Adam", "Adagrad", "Adamax", "Adadelta", "Lion"],
    ["SGD", "AdamW", "RMSprop", "NAdam", "ASGD", "AdaBelief"],
    ["RMSprop-centered-momentum", "RAdam", "Rprop", "Yogi", "seed.SGD", "seed.Adam"],
    ["AdEMAMix", "ScheduleFreeAdamW", "seed.SGDM", "seed.Adagrad", "seed.RMSProp"],
]
assert sorted(n for c in CHUNKS for n in c) == sorted(SPECS)


# -- the training loop (run by the worker) ----------------------------------------------------


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(64, 128)
        self.fc2 = torch.nn.Linear(128, 64)
        self.side = torch.nn.Linear(64, 64)

    def forward(self, x: torch.Tensor, side: bool = True) -> torch.Tensor:
        y = self.fc2(torch.nn.functional.gelu(self.fc1(x)))
        return y + self.side(x) if side else y


def build_model() -> Net:
    torch.manual_seed(0)
    return Net()


def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 + step)
    return torch.randn(32, 64, generator=g), torch.randn(32, 64, generator=g)


def groups(model: torch.nn.Module, spec: Spec) -> list[dict[str, Any]]:
    params = list(model.parameters())
    matrices, rest = [p for p in params if p.dim() >= 2], [p for p in params if p.dim() < 2]
    if spec.decay:
        return [{"params": matrices, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}]
    return [{"params": matrices}, {"params": rest}]


def make(spec: Spec, model: torch.nn.Module, kind: str = "momenta") -> torch.optim.Optimizer:
    import momenta

    if kind == "torch":
        return getattr(torch.optim, spec.cls)(groups(model, spec), **spec.kwargs)
    owner: Any = momenta
    name = spec.cls
    if name.startswith("seed."):
        owner, name = momenta.seed, name.removeprefix("seed.")
    extra = {"foreach": False} if kind == "foreach" else {}
    return getattr(owner, name)(groups(model, spec), **spec.kwargs, **extra)


def ran_compiled(opt: torch.optim.Optimizer) -> bool:
    """``opt.step()``, reporting whether code compiled by torch.compile ran in it."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        opt.step()
    return any(any(e in event.name for e in COMPILED_EVENTS) for event in prof.events())


def train(
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    steps: Iterable[int],
    set_to_none: bool,
    skipped: Iterable[int] = (),
    compiled: list[bool] | None = None,
    problems: list[str] | None = None,
    after: Callable[[int], Any] | None = None,
) -> Any:
    """forward, backward, clip, step, zero_grad; ``compiled`` collects whether each step ran
    compiled code, ``problems`` what a skipped parameter's step changed; ``after(step)``
    may return a new (model, opt) pair to continue with."""
    for step in steps:
        x, y = batch(step)
        side = step not in skipped
        loss = torch.nn.functional.mse_loss(model(x, side=side), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        watched = []
        if problems is not None and not side:
            watched = [p for p in model.side.parameters() if p.grad is None]
        before = [(p.detach().clone(), copy.deepcopy(dict(opt.state.get(p, {})))) for p in watched]
        if compiled is not None:
            compiled.append(ran_compiled(opt))
        else:
            opt.step()
        for p, (value, state) in zip(watched, before):
            if not torch.equal(p.detach(), value):
                problems.append(f"step {step}: a parameter without a gradient moved")  # type: ignore[union-attr]
            now = opt.state.get(p, {})
            if now.keys() != state.keys() or not all(_equal(now[k], state[k]) for k in state):
                problems.append(f"step {step}: the state of a parameter without a gradient changed")  # type: ignore[union-attr]
        opt.zero_grad(set_to_none=set_to_none)
        if after is not None:
            model, opt = after(step)
    return model, opt


def _equal(a: Any, b: Any) -> bool:
    if torch.is_tensor(a) and torch.is_tensor(b):
        return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    return type(a) is type(b) and a == b


def snapshot(model: torch.nn.Module, opt: torch.optim.Optimizer) -> dict[str, Any]:
    return {
        "params": [p.detach().clone() for p in model.parameters()],
        "opt": copy.deepcopy(opt.state_dict()),
    }


def roundtrip(obj: Any) -> Any:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


# -- the worker ---------------------------------------------------------------------------


def run_a(out: Path, name: str) -> dict[str, Any]:
    """Process A's runs of one optimizer: uninterrupted (with checkpoints), rebuilt, twin."""
    spec = SPECS[name]
    result: dict[str, Any] = {"final": {}, "rebuilt": {}, "twin": {}, "compiled": {}, "skip_problems": {}}
    for mode, set_to_none in MODES.items():
        for scenario, skipped in (("plain", ()), ("skip", SKIPPED)):
            model = build_model()
            opt = make(spec, model)
            compiled: list[bool] = []
            problems: list[str] = []

            def save(step: int, model: Any = model, opt: Any = opt, where: str = f"{mode}.{scenario}") -> Any:
                if step == CHECKPOINT:
                    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, out / f"{name}.{where}.ckpt.pt")
                return model, opt

            train(model, opt, range(1, STEPS + 1), set_to_none, skipped, compiled, problems, after=save)
            result["final"][f"{mode}.{scenario}"] = snapshot(model, opt)
            result["compiled"][f"{mode}.{scenario}"] = compiled
            if scenario == "skip" and set_to_none:
                result["skip_problems"][mode] = problems

        # (b): the optimizer rebuilt after every step, over the same or copied parameters
        for variant in ("same", "copy"):
            model = build_model()
            opt = make(spec, model)
            holder = {"model": model, "opt": opt}

            def rebuild(step: int, variant: str = variant, holder: dict[str, Any] = holder) -> Any:
                model, opt = holder["model"], holder["opt"]
                if step < STEPS:
                    saved = opt.state_dict()
                    if variant == "copy":
                        fresh = build_model()
                        fresh.load_state_dict(roundtrip(model.state_dict()))
                        model, saved = fresh, roundtrip(saved)
                    opt = make(spec, model)
                    opt.load_state_dict(saved)
                holder.update(model=model, opt=opt)
                return model, opt

            model, opt = train(model, opt, range(1, STEPS + 1), set_to_none, after=rebuild)
            result["rebuilt"][f"{mode}.{variant}"] = snapshot(model, opt)

        # (c): the skipped run's twin
        if spec.twin is not None:
            model = build_model()
            opt = make(spec, model, spec.twin)
            train(model, opt, range(1, STEPS + 1), set_to_none, SKIPPED)
            result["twin"][mode] = snapshot(model, opt)
    return result


def run_b(out: Path, name: str) -> dict[str, Any]:
    """Process B's runs of one optimizer: each checkpoint resumed for the remaining steps."""
    spec = SPECS[name]
    result: dict[str, Any] = {"final": {}, "compiled": {}}
    for mode, set_to_none in MODES.items():
        for scenario, skipped in (("plain", ()), ("skip", SKIPPED)):
            checkpoint = torch.load(out / f"{name}.{mode}.{scenario}.ckpt.pt", weights_only=True)
            model = build_model()
            model.load_state_dict(checkpoint["model"])
            opt = make(spec, model)
            opt.load_state_dict(checkpoint["optimizer"])
            compiled = [False] * CHECKPOINT  # steps B did not take
            train(model, opt, range(CHECKPOINT + 1, STEPS + 1), set_to_none, skipped, compiled)
            result["final"][f"{mode}.{scenario}"] = snapshot(model, opt)
            result["compiled"][f"{mode}.{scenario}"] = compiled
    return result


def worker(phase: str, out: Path, names: list[str]) -> None:
    run = {"A": run_a, "B": run_b}[phase]
    for name in names:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = run(out, name)
        result["warnings"] = [  # momenta's "compiled kernels are off" / "compiling ... failed"
            f"{w.category.__name__}: {w.message}"
            for w in caught
            if issubclass(w.category, RuntimeWarning) and "momenta" in str(w.message)
        ]
        torch.save(result, out / f"{name}.{phase}.pt")


# -- the checks (run by pytest) -------------------------------------------------------------


def _run_worker(phase: str, out: Path, names: list[str]) -> None:
    path = os.environ.get("PYTHONPATH")
    env = {**os.environ, **ENV, "PYTHONPATH": os.pathsep.join([str(REPO), *([path] if path else [])])}
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), phase, str(out), *names],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    if proc.returncode != 0:
        raise AssertionError(
            f"process {phase} failed (exit {proc.returncode}) for {names}:\n{proc.stderr[-6000:]}"
        )


def _describe(a: Any, b: Any) -> str:
    if torch.is_tensor(a) and torch.is_tensor(b):
        if a.dtype != b.dtype or a.shape != b.shape:
            return f"{a.dtype}{tuple(a.shape)} vs {b.dtype}{tuple(b.shape)}"
        diff = (a.double() - b.double()).abs()
        return f"max |diff| {diff.max().item():.3g} at {int((diff > 0).sum())} of {a.numel()} elements"
    return f"{a!r} vs {b!r}"


def differences(
    actual: dict[str, Any],
    expected: dict[str, Any],
    close: Callable[[Any, Any], bool],
    close_state: Callable[[Any, Any], bool] | None = None,
    ignore: Iterable[str] = (),
) -> list[str]:
    """Where two snapshots (parameters and optimizer state_dict) differ under ``close``
    (state values under ``close_state`` if given; param-group keys in ``ignore`` left out)."""
    close_state = close_state or close
    found = []
    for i, (a, e) in enumerate(zip(actual["params"], expected["params"])):
        if not close(a, e):
            found.append(f"param {i} {tuple(e.shape)}: {_describe(a, e)}")
    state_a, state_e = actual["opt"]["state"], expected["opt"]["state"]
    if state_a.keys() != state_e.keys():
        found.append(f"state indices {sorted(state_a)} vs {sorted(state_e)}")
    for index in sorted(state_a.keys() & state_e.keys()):
        if state_a[index].keys() != state_e[index].keys():
            found.append(f"state[{index}] keys {sorted(state_a[index])} vs {sorted(state_e[index])}")
        for key in sorted(state_a[index].keys() & state_e[index].keys()):
            a, e = state_a[index][key], state_e[index][key]
            if not close_state(a, e):
                found.append(f"state[{index}][{key!r}]: {_describe(a, e)}")
    for index, (ga, ge) in enumerate(zip(actual["opt"]["param_groups"], expected["opt"]["param_groups"])):
        for key in sorted((ga.keys() | ge.keys()) - set(ignore)):
            if key not in ga or key not in ge or not close(ga[key], ge[key]):
                found.append(f"param_groups[{index}][{key!r}]: {ga.get(key)!r} vs {ge.get(key)!r}")
    return found


def _exact(a: Any, b: Any) -> bool:
    if torch.is_tensor(a) or torch.is_tensor(b):
        return torch.is_tensor(a) and torch.is_tensor(b) and _equal(a, b)
    return a == b


def _near(a: Any, b: Any, scaled: bool = False) -> bool:
    """Equal to float32 rounding: rtol RTOL, atol ATOL; with ``scaled``, atol grows with the
    tensor's largest magnitude (state buffers that are sums of large terms cancelling)."""
    if torch.is_tensor(a) and torch.is_tensor(b):
        if a.shape != b.shape:
            return False
        a, b = a.double(), b.double()
        atol = ATOL + (RTOL * b.abs().max().item() if scaled and b.numel() else 0.0)
        return torch.allclose(a, b, rtol=RTOL, atol=atol)
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= ATOL + RTOL * abs(b)
    return a == b


def _near_state(a: Any, b: Any) -> bool:
    # RMSprop's momentum over g/(√v + ε) holds O(10) values whose sum can nearly cancel
    # (9.90 − 9.80 at step 2): its float32 rounding is relative to the terms, not the sum
    return _near(a, b, scaled=True)


def checks(name: str, a: dict[str, Any], b: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """(check, problems) for one optimizer, from process A's and process B's results."""
    spec = SPECS[name]
    rows: list[tuple[str, list[str]]] = []
    problems = [f"process {p}: {w}" for p, r in (("A", a), ("B", b)) for w in r["warnings"]]
    for mode in MODES:
        for proc, r in (("A", a), ("B", b)):
            steps = r["compiled"][f"{mode}.plain"]
            if not steps[-1]:
                problems.append(
                    f"{mode}: process {proc}'s last step ran no compiled code (steps that did: "
                    f"{[i + 1 for i, c in enumerate(steps) if c]})"
                )
    rows.append(("compiled path taken", problems))
    for mode in MODES:
        first = b["compiled"][f"{mode}.plain"][CHECKPOINT]
        note = [] if first else ["(the first step after load_state_dict ran no compiled code)"]
        found = differences(b["final"][f"{mode}.plain"], a["final"][f"{mode}.plain"], _exact)
        rows.append((f"(a) fresh-process resume, zero_grad set_to_none={MODES[mode]}", found + note if found else []))
        for variant in ("same", "copy"):
            found = differences(a["rebuilt"][f"{mode}.{variant}"], a["final"][f"{mode}.plain"], _exact)
            rows.append((f"(b) rebuilt every step ({variant} params), set_to_none={MODES[mode]}", found))
        if mode in a["skip_problems"]:
            rows.append((f"(c) no gradient: skipped as torch skips, set_to_none={MODES[mode]}", a["skip_problems"][mode]))
        if spec.twin is not None:
            twin = "torch.optim" if spec.twin == "torch" else "foreach=False"
            found = differences(a["final"][f"{mode}.skip"], a["twin"][mode], _near, _near_state, ignore=["foreach"])
            rows.append((f"(c) no gradient: matches {twin}, set_to_none={MODES[mode]}", found))
        found = differences(b["final"][f"{mode}.skip"], a["final"][f"{mode}.skip"], _exact)
        rows.append((f"(c) no gradient: fresh-process resume, set_to_none={MODES[mode]}", found))
    return rows


def report(request: pytest.FixtureRequest, rows: list[tuple[str, str, list[str]]]) -> None:
    """One subtest per (optimizer, check) where pytest has them, else one assertion."""
    try:
        subtests = request.getfixturevalue("subtests")
    except pytest.FixtureLookupError:  # pytest < 9
        subtests = None
    if subtests is not None:
        for name, check, problems in rows:
            with subtests.test(msg=f"{name}: {check}"):
                assert not problems, "\n".join(problems[:12])
        return
    failed = [f"{name}: {check}:\n    " + "\n    ".join(problems[:12]) for name, check, problems in rows if problems]
    assert not failed, f"{len(failed)} of {len(rows)} checks failed:\n" + "\n".join(failed)


@pytest.mark.parametrize("names", CHUNKS, ids=["+".join(c) for c in CHUNKS])
def test_resume_is_bit_exact_on_the_compiled_path(names, tmp_path, request):
    _run_worker("A", tmp_path, names)
    _run_worker("B", tmp_path, names)
    rows = []
    for name in names:
        a = torch.load(tmp_path / f"{name}.A.pt", weights_only=True)
        b = torch.load(tmp_path / f"{name}.B.pt", weights_only=True)
        rows += [(name, check, problems) for check, problems in checks(name, a, b)]
    report(request, rows)


if __name__ == "__main__":
    worker(sys.argv[1], Path(sys.argv[2]), sys.argv[3:])
