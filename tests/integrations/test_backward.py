"""The optimizer step inside backward: the ordinary loop's numbers (exactly, for every
optimizer whose ordinary step runs eagerly; LAMB and LARS to rounding), its state_dict,
schedulers and checkpoint resume in both directions; refusals with their reasons; detaching
restores the ordinary loop."""

from __future__ import annotations

import copy
import io
import warnings

import pytest
import torch

import momenta
from momenta.integrations import step_in_backward

from .common import assert_same_params, batch, tiny_gpt

#: (optimizer, options, parameters: all or the 2-D ones); every kind of rule: elementwise
#: (momentum, EMAs, sums, signs, averaged and schedule-free iterates), segmented (LAMB,
#: LARS: per-parameter norms) and whole-parameter (Adafactor's rows and columns, Muon)
CASES = {
    "AdamW": (momenta.AdamW, dict(lr=1e-2, weight_decay=0.1)),
    "Adam-amsgrad": (momenta.Adam, dict(lr=1e-2, amsgrad=True)),
    "SGD-momentum": (momenta.SGD, dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-2)),
    "Adagrad": (momenta.Adagrad, dict(lr=0.1, lr_decay=0.01)),
    "RMSprop-centered": (momenta.RMSprop, dict(lr=1e-2, momentum=0.9, centered=True)),
    "Lion": (momenta.Lion, dict(lr=1e-3, weight_decay=0.1)),
    "NAdam": (momenta.NAdam, dict(lr=1e-2)),
    "RAdam": (momenta.RAdam, dict(lr=1e-2)),
    "Adamax": (momenta.Adamax, dict(lr=1e-2)),
    "ASGD": (momenta.ASGD, dict(lr=1e-2, t0=1)),
    "Rprop": (momenta.Rprop, dict(lr=1e-2)),
    "Yogi": (momenta.Yogi, dict(lr=1e-2)),
    "AdEMAMix": (momenta.AdEMAMix, dict(lr=1e-2)),
    "ScheduleFreeAdamW": (momenta.ScheduleFreeAdamW, dict(lr=1e-2, warmup_steps=2)),
    "Adafactor": (momenta.Adafactor, dict(lr=1e-2)),
    "AdafactorPaper": (momenta.AdafactorPaper, dict()),
    "MuonWithAdamW": (momenta.MuonWithAdamW, dict(adamw_lr=1e-2)),
    "seed.SGDM": (momenta.seed.SGDM, dict(lr=0.1)),
}
#: per-parameter norms: the ordinary loop takes them over flat buffers in segments
#: (torch.segment_reduce), the step in backward of the parameter alone: rounding apart
ROUNDING = {
    "LAMB": (momenta.LAMB, dict(lr=1e-2, weight_decay=0.01)),
    "LARS": (momenta.LARS, dict(lr=0.1, momentum=0.9)),
}


def ordinary(model, opt, steps, start=0, scheduler=None):
    for i in range(start, start + steps):
        model(*batch(i)).backward()
        opt.step()
        opt.zero_grad()
        if scheduler is not None:
            scheduler.step()


def in_backward(model, opt, steps, start=0, scheduler=None):
    for i in range(start, start + steps):
        model(*batch(i)).backward()
        if scheduler is not None:
            scheduler.step()


def pair(cls, options):
    a, b = tiny_gpt(), tiny_gpt()
    return a, cls(a.parameters(), **options), b, cls(b.parameters(), **options)


@pytest.mark.parametrize("case", [*CASES, *ROUNDING])
def test_same_numbers_and_state_as_the_ordinary_loop(case):
    cls, options = {**CASES, **ROUNDING}[case]
    model, opt, reference, reference_opt = pair(cls, options)
    ordinary(reference, reference_opt, 4)
    handle = step_in_backward(model, opt)
    in_backward(model, opt, 4)
    assert handle.steps == 4 * 28 and all(p.grad is None for p in model.parameters())
    tolerance = dict(rtol=1e-6, atol=1e-7) if case in ROUNDING else {}
    assert_same_params(model, reference, **tolerance)
    ours, theirs = opt.state_dict(), reference_opt.state_dict()
    assert ours["param_groups"] == theirs["param_groups"]  # torch's shape: no view leaked in
    assert ours["state"].keys() == theirs["state"].keys()
    for index, entry in theirs["state"].items():
        assert ours["state"][index].keys() == entry.keys()
        for key, value in entry.items():
            torch.testing.assert_close(ours["state"][index][key], value, **(tolerance or dict(rtol=0, atol=0)))


def test_muon_over_the_matrices_alone():
    """Muon takes 2-D parameters only: the others keep accumulating gradients as usual."""
    model, reference = tiny_gpt(), tiny_gpt()
    opt = momenta.Muon([p for p in model.parameters() if p.dim() == 2], lr=0.02)
    reference_opt = momenta.Muon([p for p in reference.parameters() if p.dim() == 2], lr=0.02)
    handle = step_in_backward(model, opt)
    for i in range(3):
        model(*batch(i)).backward()
        model.zero_grad()  # the vectors' gradients, which no optimizer steps
        reference(*batch(i)).backward()
        reference_opt.step()
        reference.zero_grad()
    assert handle.steps == 3 * len(opt.param_groups[0]["params"])
    assert_same_params(model, reference)


def test_a_scheduler_drives_the_steps_in_backward_without_warnings():
    model, opt, reference, reference_opt = pair(momenta.AdamW, dict(lr=1e-2))

    def schedule(o):
        return torch.optim.lr_scheduler.OneCycleLR(o, max_lr=0.05, total_steps=6)

    ordinary(reference, reference_opt, 6, scheduler=schedule(reference_opt))
    step_in_backward(model, opt)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "lr_scheduler.step() before optimizer.step()" fails
        scheduler = schedule(opt)
        in_backward(model, opt, 6, scheduler=scheduler)
    assert opt.param_groups[0]["lr"] == reference_opt.param_groups[0]["lr"]
    assert_same_params(model, reference)


@pytest.mark.parametrize("first, then", [("backward", "backward"), ("ordinary", "backward"), ("backward", "ordinary")])
def test_checkpoint_resume_in_both_directions(first, then):
    """Three steps, a checkpoint (torch.save, loaded weights_only), three more steps in a new
    process's model and optimizer: the uninterrupted ordinary run's numbers."""
    loops = {"backward": in_backward, "ordinary": ordinary}
    reference = tiny_gpt()
    reference_opt = momenta.AdamW(reference.parameters(), lr=1e-2, weight_decay=0.1)
    ordinary(reference, reference_opt, 6)

    model = tiny_gpt()
    opt = momenta.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    handle = step_in_backward(model, opt) if first == "backward" else None
    loops[first](model, opt, 3)
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, buffer)
    if handle:
        handle.remove()

    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    resumed = tiny_gpt(seed=1)  # other weights, overwritten by the checkpoint
    resumed.load_state_dict(saved["model"])
    resumed_opt = momenta.AdamW(resumed.parameters(), lr=1e-2, weight_decay=0.1)
    resumed_opt.load_state_dict(saved["optimizer"])
    if then == "backward":
        step_in_backward(resumed, resumed_opt)
    loops[then](resumed, resumed_opt, 3, start=3)
    assert_same_params(resumed, reference)


def test_load_state_dict_while_attached_is_seen():
    """load_state_dict replaces the optimizer's state and groups: the steps use the new ones
    (here the state of another run, one step further, and a new lr)."""
    model, opt, reference, reference_opt = pair(momenta.Adam, dict(lr=1e-2))
    ordinary(reference, reference_opt, 3)
    step_in_backward(model, opt)
    in_backward(model, opt, 2)
    model.load_state_dict(reference.state_dict())
    opt.load_state_dict(copy.deepcopy(reference_opt.state_dict()))
    opt.param_groups[0]["lr"] = reference_opt.param_groups[0]["lr"] = 5e-3
    in_backward(model, opt, 2, start=3)
    ordinary(reference, reference_opt, 2, start=3)
    assert_same_params(model, reference)
    assert opt.state_dict()["state"][0]["step"] == 5


def test_remove_restores_the_ordinary_loop_exactly():
    model, opt, reference, reference_opt = pair(momenta.AdamW, dict(lr=1e-2))
    ordinary(reference, reference_opt, 5)
    with step_in_backward(model, opt) as handle:
        in_backward(model, opt, 2)
    assert not handle.attached
    model(*batch(2)).backward()  # gradients accumulate again, nothing steps
    assert all(p.grad is not None for p in model.parameters())
    opt.step()
    opt.zero_grad()
    handle.remove()  # twice: nothing
    again = step_in_backward(model, opt)  # attaching after removal is allowed
    in_backward(model, opt, 1, start=3)
    again.remove()
    ordinary(model, opt, 1, start=4)
    assert_same_params(model, reference)


def test_frozen_parameters_are_left_alone():
    model, opt, reference, reference_opt = pair(momenta.AdamW, dict(lr=1e-2))
    for m in (model, reference):
        m.wpe.weight.requires_grad_(False)
    handle = step_in_backward(model, opt)
    assert "wpe.weight" not in handle.names and len(handle.names) == 27
    in_backward(model, opt, 2)
    ordinary(reference, reference_opt, 2)
    assert_same_params(model, reference)


def test_sparse_gradients_step_lazily():
    """SparseAdam's lazy rows, through the hook (an embedding with sparse gradients)."""
    runs = []
    for attach in (True, False):
        torch.manual_seed(0)
        table = torch.nn.Embedding(20, 4, sparse=True)
        opt = momenta.SparseAdam(table.parameters(), lr=0.1)
        if attach:
            step_in_backward(table, opt)
        for i in range(3):
            table(torch.tensor([i, i + 5, 7])).square().sum().backward()
            if not attach:
                opt.step()
                opt.zero_grad()
        runs.append(table.weight.detach().clone())
    assert torch.equal(*runs)


class ClippingAdamW(momenta.AdamW):
    def step(self, closure=None):  # a step that reads every parameter: global-norm clipping
        torch.nn.utils.clip_grad_norm_([p for g in self.param_groups for p in g["params"]], 1.0)
        return super().step(closure)


@pytest.mark.parametrize(
    "build, error, message",
    [
        (lambda m: momenta.AdamW(m.parameters(), nonfinite="skip"), ValueError, r"nonfinite='skip'\) skips or refuses the whole step"),
        (lambda m: momenta.Lion(m.parameters(), nonfinite="raise"), ValueError, r"Lion\(nonfinite='raise'\)"),
        (lambda m: torch.optim.AdamW(m.parameters()), ValueError, r"AdamW is not a momenta optimizer"),
        (lambda m: ClippingAdamW(m.parameters()), ValueError, r"ClippingAdamW overrides step\(\) .*ClippingAdamW.step"),
    ],
)
def test_optimizers_that_need_the_whole_step_are_refused(build, error, message):
    model = tiny_gpt()
    with pytest.raises(error, match=message):
        step_in_backward(model, build(model))
    model(*batch(0)).backward()  # nothing was attached
    assert all(p.grad is not None for p in model.parameters())


def test_what_cannot_be_honoured_is_refused():
    model = tiny_gpt()
    opt = momenta.AdamW(model.parameters())
    with pytest.raises(ValueError, match=r"accumulate=4 cannot be honoured: each backward steps"):
        step_in_backward(model, opt, accumulate=4)
    with pytest.raises(ValueError, match=r"invalid accumulate: 0"):
        step_in_backward(model, opt, accumulate=0)
    with pytest.raises(ValueError, match=r"max_grad_norm=1.0 cannot be honoured: the global norm needs every gradient"):
        step_in_backward(model, opt, max_grad_norm=1.0)
    with pytest.raises(ValueError, match=r"parameter \(param group 0, index 0, shape \(64, 32\)\) is not one of the model's"):
        step_in_backward(tiny_gpt(), opt)
    model(*batch(0)).backward()
    with pytest.raises(ValueError, match=r"parameter 'wte.weight' .* already has a gradient"):
        step_in_backward(model, opt)
    opt.zero_grad()
    handle = step_in_backward(model, opt)
    with pytest.raises(RuntimeError, match=r"parameter 'wte.weight' .* already steps inside backward; remove\(\)"):
        step_in_backward(model, momenta.SGD(model.parameters(), lr=0.1))
    handle.remove()
    step_in_backward(model, opt).remove()


def test_a_parameter_moved_out_of_the_groups_is_reported():
    model = tiny_gpt()
    opt = momenta.AdamW(model.parameters())
    step_in_backward(model, opt)
    opt.param_groups[0]["params"] = opt.param_groups[0]["params"][1:]
    with pytest.raises(RuntimeError, match="no longer in any param group of the AdamW; remove the handle"):
        model(*batch(0)).backward()
