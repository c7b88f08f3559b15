"""Reliability: non-finite gradients, validated and atomic load_state_dict, validation at
every entry point, exact resume, edge cases."""

from __future__ import annotations

import copy
import io
import math
import subprocess
import sys
import textwrap

import pytest
import torch
from helpers import assert_states_close

import momenta
from momenta import seed

ALL = {
    "SGD": lambda p, **k: momenta.SGD(p, lr=0.1, momentum=0.9, **k),
    "Adam": lambda p, **k: momenta.Adam(p, lr=0.01, amsgrad=True, **k),
    "AdamW": lambda p, **k: momenta.AdamW(p, lr=0.01, **k),
    "Adagrad": lambda p, **k: momenta.Adagrad(p, lr=0.1, lr_decay=0.01, **k),
    "RMSprop": lambda p, **k: momenta.RMSprop(p, lr=0.01, momentum=0.5, centered=True, **k),
    "Adamax": lambda p, **k: momenta.Adamax(p, lr=0.01, weight_decay=0.01, **k),
    "NAdam": lambda p, **k: momenta.NAdam(p, lr=0.01, weight_decay=0.01, decoupled_weight_decay=True, **k),
    "RAdam": lambda p, **k: momenta.RAdam(p, lr=0.01, **k),
    "Adadelta": lambda p, **k: momenta.Adadelta(p, weight_decay=0.01, **k),
    "ASGD": lambda p, **k: momenta.ASGD(p, lr=0.05, t0=2, **k),
    "Rprop": lambda p, **k: momenta.Rprop(p, lr=0.01, **k),
    "seed.SGD": lambda p, **k: seed.SGD(p, lr=0.1, **k),
    "seed.SGDM": lambda p, **k: seed.SGDM(p, lr=0.1, **k),
    "seed.Adagrad": lambda p, **k: seed.Adagrad(p, lr=0.1, **k),
    "seed.RMSProp": lambda p, **k: seed.RMSProp(p, lr=0.01, **k),
    "seed.Adam": lambda p, **k: seed.Adam(p, lr=0.01, **k),
}
#: the torch drop-ins after the first five
NEWER = ["Adamax", "NAdam", "RAdam", "Adadelta", "ASGD", "Rprop"]
PATHS = {"reference": dict(foreach=False), "fast": {}}
# the seed's optimizers take no foreach flag: they run the default (fast) path only
CASES = [(n, p) for n in ALL for p in PATHS if not (n.startswith("seed.") and p == "reference")]


def make(name, path="fast", nonfinite=None, dtype=torch.float32):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 2)).to(dtype)
    kwargs = dict(nonfinite=nonfinite) if nonfinite else {}
    opt = ALL[name](list(model.named_parameters()) if "Adam" in name else model.parameters(), **kwargs, **({} if name.startswith("seed.") else PATHS[path]))
    return model, opt


def backward(model, step, poison=False):
    g = torch.Generator().manual_seed(step)
    x = torch.randn(8, 4, generator=g, dtype=model[0].weight.dtype)
    model.zero_grad()
    model(x).pow(2).mean().backward()
    if poison:
        model[2].weight.grad[0, 1] = math.nan if step % 2 else math.inf


def snapshot(model, opt):
    return [p.detach().clone() for p in model.parameters()], copy.deepcopy(opt.state_dict())


def same(a, b):
    (pa, sa), (pb, sb) = a, b
    assert all(torch.equal(x, y) for x, y in zip(pa, pb))
    assert sa["param_groups"] == sb["param_groups"]
    assert_states_close(sb["state"], sa["state"])


# -- non-finite gradients ------------------------------------------------------------------


@pytest.mark.parametrize("name,path", CASES)
def test_skip_leaves_everything_bit_for_bit_unchanged(name, path):
    model, opt = make(name, path, nonfinite="skip")
    for step in range(3):
        backward(model, step)
        opt.step()
    before = snapshot(model, opt)
    backward(model, 3, poison=True)
    opt.step()
    after = snapshot(model, opt)
    assert opt.skipped_steps == 1
    assert after[1].pop("nonfinite_skipped", None) == 1 and before[1].pop("nonfinite_skipped") == 0
    same(before, after)
    backward(model, 4)
    opt.step()  # a finite step afterwards works normally
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("name", list(ALL))
def test_raise_names_the_parameter_and_changes_nothing(name):
    model, opt = make(name, nonfinite="raise")
    backward(model, 0)
    opt.step()
    before = snapshot(model, opt)
    backward(model, 1, poison=True)
    with pytest.raises(FloatingPointError) as info:
        opt.step()
    message = str(info.value)
    assert "param group 0, index 2" in message and "(2, 6)" in message
    if "Adam" in name:  # named parameters: the name is in the message
        assert "'2.weight'" in message
    same(before, snapshot(model, opt))


# (RAdam and ASGD let them through too, but not as the same non-finite values: torch's
# lerp makes NaN of an average that held inf, and its ASGD for-loop and foreach differ)
@pytest.mark.parametrize("name", ["SGD", "Adam", "RMSprop", "Adamax", "NAdam", "Adadelta", "Rprop"])
def test_default_lets_non_finite_values_through_as_torch(name):
    results = []
    for cls in (getattr(torch.optim, name), getattr(momenta, name)):
        p = torch.nn.Parameter(torch.ones(3))
        opt = cls([p], lr=0.1)
        p.grad = torch.tensor([1.0, math.nan, math.inf])
        opt.step()
        results.append(p.detach().clone())
    torch.testing.assert_close(results[1], results[0], equal_nan=True)


def test_skipped_count_survives_a_checkpoint():
    model, opt = make("Adam", nonfinite="skip")
    backward(model, 1, poison=True)
    opt.step()
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    model2, opt2 = make("Adam", nonfinite="skip")
    opt2.load_state_dict(torch.load(buffer, weights_only=True))
    assert opt2.skipped_steps == 1
    with pytest.raises(ValueError, match="Invalid nonfinite: 'ignore'"):
        momenta.Adam(model.parameters(), nonfinite="ignore")


def test_grad_scaler_skips_once_not_twice():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    opt = momenta.Adam(model.parameters(), lr=0.1, nonfinite="skip")
    scaler = torch.amp.GradScaler("cpu", init_scale=4.0)
    weight = model.weight.detach().clone()
    loss = model(torch.randn(2, 3)).sum()
    scaler.scale(loss).backward()
    model.weight.grad[0, 0] = math.inf
    scaler.step(opt)  # the scaler sees the inf and does not call opt.step at all
    scaler.update()
    assert opt.skipped_steps == 0 and scaler.get_scale() == 2.0
    assert torch.equal(model.weight, weight)
    opt.zero_grad()
    scaler.scale(model(torch.randn(2, 3)).sum()).backward()
    scaler.step(opt)
    assert not torch.equal(model.weight, weight) and opt.skipped_steps == 0


# -- validation -----------------------------------------------------------------------------


def test_add_param_group_validates_before_adding():
    opt = momenta.Adam([torch.nn.Parameter(torch.ones(2))])
    for bad, message in [
        ({"lr": -1.0}, "Invalid learning rate: -1.0"),
        ({"lr": math.nan}, "Invalid learning rate: nan"),
        ({"betas": (0.9, 1.0)}, "Invalid beta parameter at index 1: 1.0"),
        ({"eps": -1e-8}, "Invalid epsilon value: -1e-08"),
        ({"weight_decay": math.nan}, "Invalid weight_decay value: nan"),
    ]:
        with pytest.raises(ValueError, match=message):
            opt.add_param_group({"params": [torch.nn.Parameter(torch.ones(2))], **bad})
    with pytest.raises(TypeError, match="Invalid learning rate: 'big'"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.ones(2))], "lr": "big"})
    assert len(opt.param_groups) == 1


def test_values_changed_between_steps_are_checked_before_anything_changes():
    model, opt = make("AdamW")
    backward(model, 0)
    opt.step()
    before = snapshot(model, opt)
    opt.param_groups[0]["lr"] = -0.5  # e.g. a buggy schedule
    backward(model, 1)
    with pytest.raises(ValueError, match="Invalid learning rate: -0.5"):
        opt.step()
    opt.param_groups[0]["lr"] = 0.01
    same(before, snapshot(model, opt))


def test_meta_parameters_are_rejected_clearly():
    with pytest.raises(ValueError, match="meta device"):
        momenta.Adam([torch.nn.Parameter(torch.empty(3, device="meta"))])


# -- load_state_dict: validated and atomic -----------------------------------------------


def _trained(name="Adam"):
    model, opt = make(name)
    for step in range(2):
        backward(model, step)
        opt.step()
    return model, opt


def _corrupt(sd, edit):
    sd = copy.deepcopy(sd)
    edit(sd)
    return sd


def _set(path, value):
    def edit(sd):
        target = sd
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return edit


def _delete(path):
    def edit(sd):
        target = sd
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return edit


MALFORMED = {
    "not a mapping": (lambda sd: None, "a state_dict is a mapping"),
    "no state": (_delete(["state"]), r"missing key\(s\) \['state'\]"),
    "no param_groups": (_delete(["param_groups"]), "missing key"),
    "unknown top-level key": (_set(["extra"], 1), r"unknown key\(s\) \['extra'\]"),
    "groups not a list": (_set(["param_groups"], "groups"), "param_groups must be a list of dicts"),
    "state not a mapping": (_set(["state"], [1, 2]), "state must be a mapping"),
    "one group too many": (lambda sd: sd["param_groups"].append(copy.deepcopy(sd["param_groups"][0])), r"has 2 param group\(s\), the optimizer 1"),
    "too few parameters": (lambda sd: sd["param_groups"][0]["params"].pop(), r"has 3 parameter\(s\) in the state_dict, 4 in the optimizer"),
    "group without params": (_delete(["param_groups", 0, "params"]), "param group 0 has no list of params"),
    "negative lr": (_set(["param_groups", 0, "lr"], -1.0), "param group 0: Invalid learning rate: -1.0"),
    "beta of 1": (_set(["param_groups", 0, "betas"], (0.9, 1.0)), "Invalid beta parameter at index 1"),
    "string eps": (_set(["param_groups", 0, "eps"], "tiny"), "Invalid epsilon value: 'tiny'"),
    "state of an unknown parameter": (_set(["state", 99], {}), r"parameter id\(s\) \[99\]"),
    "duplicate parameter id": (lambda sd: sd["param_groups"][0]["params"].__setitem__(1, 0), "appears twice"),
    "state entry not a dict": (_set(["state", 0], torch.zeros(3)), "is a Tensor"),
    "unknown state key": (_set(["state", 0, "exp_avgg"], torch.zeros(6, 4)), "unknown key 'exp_avgg'"),
    "missing buffer": (_delete(["state", 0, "exp_avg_sq"]), "missing 'exp_avg_sq'"),
    "missing step": (_delete(["state", 1, "step"]), "missing 'step'"),
    "amsgrad off with its buffer": (_set(["param_groups", 0, "amsgrad"], False), "unknown key 'max_exp_avg_sq'"),
    "amsgrad on without its buffer": (_delete(["state", 2, "max_exp_avg_sq"]), "missing 'max_exp_avg_sq'"),
    "wrong shape": (_set(["state", 0, "exp_avg"], torch.zeros(4, 6)), r"'exp_avg' has shape \(4, 6\), the parameter \(6, 4\)"),
    "integer buffer": (_set(["state", 0, "exp_avg"], torch.zeros(6, 4, dtype=torch.int64)), "'exp_avg' has dtype torch.int64"),
    "complex buffer for a real parameter": (_set(["state", 0, "exp_avg"], torch.zeros(6, 4, dtype=torch.complex64)), "has dtype torch.complex64"),
    "buffer not a tensor": (_set(["state", 0, "exp_avg"], [0.0] * 24), "'exp_avg' is a list"),
    "negative step": (_set(["state", 0, "step"], torch.tensor(-1.0)), r"step is -1.0 \(expected a whole number >= 0\)"),
    "fractional step": (_set(["state", 0, "step"], torch.tensor(2.5)), "step is 2.5"),
    "nan step": (_set(["state", 0, "step"], torch.tensor(math.nan)), "step is nan"),
    "step with a shape": (_set(["state", 0, "step"], torch.zeros(2)), r"step has shape \(2,\)"),
    "bad skipped count": (_set(["nonfinite_skipped"], -3), "nonfinite_skipped is -3"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_state_dicts_are_refused_and_nothing_changes(case):
    edit, message = MALFORMED[case]
    model, opt = _trained()
    before = snapshot(model, opt)
    good = opt.state_dict()
    bad = None if case == "not a mapping" else _corrupt(good, edit)
    with pytest.raises(ValueError, match=message) as info:
        opt.load_state_dict(bad)
    assert "nothing was loaded" in str(info.value)
    same(before, snapshot(model, opt))
    backward(model, 5)  # and it still trains
    opt.step()


#: malformed states of the newer drop-ins: their scalar state (mu_product, eta, mu) and buffers
MALFORMED_NEWER = {
    "NAdam without mu_product": ("NAdam", _delete(["state", 0, "mu_product"]), "missing 'mu_product'"),
    "NAdam mu_product with a shape": ("NAdam", _set(["state", 1, "mu_product"], torch.ones(2)), r"'mu_product' is a tensor of shape \(2,\)"),
    "ASGD eta not a number": ("ASGD", _set(["state", 0, "eta"], "fast"), "'eta' is 'fast'"),
    "ASGD without ax": ("ASGD", _delete(["state", 2, "ax"]), "missing 'ax'"),
    "Adamax with Adam's buffer": ("Adamax", _set(["state", 0, "exp_avg_sq"], torch.zeros(6, 4)), "unknown key 'exp_avg_sq'"),
    "RAdam buffer of another shape": ("RAdam", _set(["state", 0, "exp_avg_sq"], torch.zeros(4, 6)), r"'exp_avg_sq' has shape \(4, 6\)"),
    "Adadelta without acc_delta": ("Adadelta", _delete(["state", 3, "acc_delta"]), "missing 'acc_delta'"),
    "Rprop integer step sizes": ("Rprop", _set(["state", 0, "step_size"], torch.ones(6, 4, dtype=torch.int64)), "'step_size' has dtype torch.int64"),
}


@pytest.mark.parametrize("case", list(MALFORMED_NEWER))
def test_malformed_states_of_the_newer_optimizers_are_refused(case):
    name, edit, message = MALFORMED_NEWER[case]
    model, opt = _trained(name)
    before = snapshot(model, opt)
    with pytest.raises(ValueError, match=message) as info:
        opt.load_state_dict(_corrupt(opt.state_dict(), edit))
    assert "nothing was loaded" in str(info.value)
    same(before, snapshot(model, opt))
    opt.load_state_dict(opt.state_dict())  # the good one loads
    backward(model, 5)
    opt.step()


def test_every_difference_is_reported_at_once():
    model, opt = _trained()
    sd = opt.state_dict()
    bad = _corrupt(sd, lambda s: (_set(["state", 0, "step"], torch.tensor(-1.0))(s), _delete(["state", 1, "exp_avg"])(s)))
    with pytest.raises(ValueError) as info:
        opt.load_state_dict(bad)
    assert "step is -1.0" in str(info.value) and "missing 'exp_avg'" in str(info.value)


def test_state_dict_of_another_model_is_refused():
    _, opt = _trained("SGD")
    other = torch.nn.Linear(4, 3)
    other_opt = momenta.SGD(other.parameters(), lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match=r"has 4 parameter\(s\) in the state_dict, 2 in the optimizer"):
        other_opt.load_state_dict(opt.state_dict())


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW", "Adagrad", "RMSprop", *NEWER])
def test_torch_state_dicts_pass_the_checks(name):
    model = torch.nn.Linear(3, 2)
    kwargs = dict(momentum=0.9) if name in ("SGD", "RMSprop") else {}
    t = getattr(torch.optim, name)(model.parameters(), lr=0.1, **kwargs)
    model(torch.randn(4, 3)).sum().backward()
    t.step()
    m = getattr(momenta, name)(model.parameters(), lr=0.1, **kwargs)
    m.load_state_dict(t.state_dict())


# -- exact resume --------------------------------------------------------------------------

RESUME_SCRIPT = textwrap.dedent(
    """
    import sys, torch, momenta
    sys.path.insert(0, {tests!r})
    from test_reliability import CASES, backward, make
    results = {{}}
    for name, path in CASES:
        model, opt = make(name, path)
        saved = torch.load({checkpoint!r}.format(name=name, path=path), weights_only=True)
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        for step in range(3, 6):
            backward(model, step)
            opt.step()
        results[(name, path)] = [p.detach() for p in model.parameters()]
    torch.save(results, {out!r})
    """
)


def test_resume_in_a_fresh_process_is_bit_exact(tmp_path):
    """6 steps uninterrupted == 3 steps, save, load in a new process, 3 steps (float32)."""
    checkpoint = str(tmp_path / "{name}-{path}.pt")
    uninterrupted = {}
    for name, path in CASES:
        model, opt = make(name, path)
        for step in range(6):
            if step == 3:
                saved = {"model": model.state_dict(), "optimizer": opt.state_dict()}
                torch.save(saved, checkpoint.format(name=name, path=path))
            backward(model, step)
            opt.step()
        uninterrupted[(name, path)] = [p.detach().clone() for p in model.parameters()]
    out = str(tmp_path / "resumed.pt")
    tests = str(__import__("pathlib").Path(__file__).parent)
    script = RESUME_SCRIPT.format(tests=tests, checkpoint=checkpoint, out=out)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=300)
    resumed = torch.load(out, weights_only=True)
    assert resumed.keys() == uninterrupted.keys()
    for key in uninterrupted:
        for a, b in zip(resumed[key], uninterrupted[key]):
            assert torch.equal(a, b), key


# -- edge cases ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW", "Adagrad", "RMSprop", *NEWER])
@pytest.mark.parametrize("path", list(PATHS))
def test_edge_shapes_layouts_and_dtypes_match_torch(name, path):
    """0-element, scalar, non-contiguous and channels_last parameters, and bf16, fp16,
    fp32, fp64 parameters in one group."""

    def params():
        torch.manual_seed(0)
        return [
            torch.nn.Parameter(torch.randn(0, 3)),
            torch.nn.Parameter(torch.tensor(1.5)),
            torch.nn.Parameter(torch.randn(4, 3).t()),  # not contiguous
            torch.nn.Parameter(torch.randn(2, 3, 4, 4).contiguous(memory_format=torch.channels_last)),
            torch.nn.Parameter(torch.randn(5).bfloat16()),
            torch.nn.Parameter(torch.randn(5).half()),
            torch.nn.Parameter(torch.randn(5).double()),
        ]

    results = []
    for cls, flags in ((getattr(torch.optim, name), dict(foreach=False)), (getattr(momenta, name), PATHS[path])):
        ps = params()
        opt = cls(ps, lr=0.01, **flags)
        for step in range(3):
            g = torch.Generator().manual_seed(step)
            for p in ps:
                p.grad = torch.randn(p.shape, generator=g).to(p.dtype).contiguous(memory_format=torch.preserve_format)
            opt.step()
        results.append(ps)
    for a, b in zip(*results):
        assert a.stride() == b.stride() and a.dtype == b.dtype
        tol = dict(rtol=1e-2, atol=1e-2) if a.dtype in (torch.bfloat16, torch.float16) else dict(rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(a, b, **tol)


@pytest.mark.parametrize("lr", [1e-30, 1e30])
def test_extreme_learning_rates_stay_finite_where_torch_does(lr):
    results = []
    for cls in (torch.optim.Adam, momenta.Adam):
        p = torch.nn.Parameter(torch.ones(4, dtype=torch.float64))
        opt = cls([p], lr=lr)
        p.grad = torch.full((4,), 0.5, dtype=torch.float64)
        opt.step()
        results.append(p.detach().clone())
    torch.testing.assert_close(results[1], results[0], rtol=1e-12, atol=0)


def test_zero_gradients_where_v_is_zero_give_no_nan():
    for cls in (momenta.Adam, momenta.Adagrad, momenta.RMSprop, seed.Adam, seed.Adagrad, seed.RMSProp):
        p = torch.nn.Parameter(torch.ones(3))
        opt = cls([p], lr=0.1)
        p.grad = torch.zeros(3)
        opt.step()
        assert torch.equal(p, torch.ones(3)), cls
