"""What a state_dict must be to load into an optimizer: checked before anything changes.

torch's ``load_state_dict`` trusts its input: a state_dict of another model, a truncated
file or a hand-edited one fails halfway through a later step, or not at all. momenta checks
the whole structure first (groups, parameters per group, state keys against the rules,
tensor shapes and kinds against the parameters, step counts, hyperparameters) and reports
every difference at once; the optimizer is left exactly as it was. Each saved group's
hyperparameters are checked once, as everywhere else (:func:`.validation.checked_rules`),
whether its parameters have state or not.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from . import storage, validation

if TYPE_CHECKING:
    from .composition import Rules
    from .optimizer import Optimizer

TOP_LEVEL = {"state", "param_groups", "nonfinite_skipped", "rounding"}


def _shape(x: Any) -> str:
    return str(tuple(x.shape))


def _step_problem(value: Any) -> str | None:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            return f"step has shape {_shape(value)} (expected a scalar)"
        if value.is_complex() or value.dtype == torch.bool:
            return f"step has dtype {value.dtype}"
        value = value.item()
    elif not isinstance(value, (int, float)) or isinstance(value, bool):
        return f"step is {value!r} (expected a number or a scalar tensor)"
    if not (math.isfinite(value) and value >= 0 and float(value).is_integer()):
        return f"step is {value} (expected a whole number >= 0)"
    return None


def _scalar_problem(name: str, value: Any) -> str | None:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1 or value.is_complex() or value.dtype == torch.bool:
            return f"{name!r} is a tensor of shape {_shape(value)} and dtype {value.dtype} (expected a real scalar)"
    elif not isinstance(value, (int, float)) or isinstance(value, bool):
        return f"{name!r} is {value!r} (expected a number or a scalar tensor)"
    return None


def _buffer_problem(name: str, value: Any, p: torch.Tensor, shape: torch.Size) -> str | None:
    if not isinstance(value, torch.Tensor):
        return f"{name!r} is a {type(value).__name__} (expected a tensor)"
    if value.shape != shape:
        expected = f"the parameter {_shape(p)}" if shape == p.shape else f"expected {tuple(shape)}"
        return f"{name!r} has shape {_shape(value)}, {expected}"
    if value.is_complex() != p.is_complex() or not (value.is_floating_point() or value.is_complex()):
        return f"{name!r} has dtype {value.dtype}, the parameter {p.dtype}"
    if value.is_sparse:
        return f"{name!r} is sparse"
    return None


def problems(optimizer: Optimizer, state_dict: Any) -> list[str]:
    """Every way ``state_dict`` does not fit ``optimizer``; empty when it loads cleanly."""
    if not isinstance(state_dict, Mapping):
        return [f"a state_dict is a mapping, got {type(state_dict).__name__}"]
    found: list[str] = []
    missing = {"state", "param_groups"} - set(state_dict)
    if missing:
        return [f"missing key(s) {sorted(missing)}"]
    unknown = set(state_dict) - TOP_LEVEL
    if unknown:
        found.append(f"unknown key(s) {sorted(map(str, unknown))}")
    rounding = state_dict.get("rounding", {"steps": 0})
    if not (isinstance(rounding, Mapping) and set(rounding) == {"steps"} and all(isinstance(v, int) and not isinstance(v, bool) for v in rounding.values())):
        found.append(f"rounding is {rounding!r} (expected {{'steps': int}})")
    skipped = state_dict.get("nonfinite_skipped", 0)
    if not isinstance(skipped, int) or isinstance(skipped, bool) or skipped < 0:
        found.append(f"nonfinite_skipped is {skipped!r} (expected a whole number >= 0)")
    saved_groups, state = state_dict["param_groups"], state_dict["state"]
    if not isinstance(saved_groups, (list, tuple)) or not all(isinstance(g, Mapping) for g in saved_groups):
        return found + ["param_groups must be a list of dicts"]
    if not isinstance(state, Mapping):
        return found + [f"state must be a mapping, got {type(state).__name__}"]
    groups = optimizer.param_groups
    if len(saved_groups) != len(groups):
        return found + [f"the state_dict has {len(saved_groups)} param group(s), the optimizer {len(groups)}"]

    # None: the group is refused; the group's values as saved (they say how its state is stored)
    index_of: dict[Any, tuple[int, torch.Tensor, Rules | None, Mapping[str, Any]]] = {}
    for g_index, (saved, group) in enumerate(zip(saved_groups, groups)):
        ids = saved.get("params")
        if not isinstance(ids, (list, tuple)):
            found.append(f"param group {g_index} has no list of params")
            continue
        if len(ids) != len(group["params"]):
            found.append(
                f"param group {g_index} has {len(ids)} parameter(s) in the state_dict, "
                f"{len(group['params'])} in the optimizer"
            )
            continue
        merged = {**group, **{k: v for k, v in saved.items() if k not in ("params", "param_names")}}
        rules: Rules | None = None
        try:
            rules = validation.checked_rules(optimizer, merged)
            storage.check(saved, None, [])
        except Exception as error:  # a value the checks or the rules refuse
            found.append(f"param group {g_index}: {error}")
            rules = None
        for i, p in zip(ids, group["params"]):
            if i in index_of:
                found.append(f"parameter id {i!r} appears twice in param_groups")
            index_of[i] = (g_index, p, rules, saved)

    unknown_ids = [k for k in state if k not in index_of]
    if unknown_ids:
        found.append(f"state for parameter id(s) {unknown_ids} that no param group lists")
    for i, entry in state.items():
        if i not in index_of:
            continue
        g_index, p, rules, saved = index_of[i]
        if rules is None:
            continue  # its group is refused: no rules to check the state against
        where = f"state of parameter {i!r} (param group {g_index})"
        if not isinstance(entry, Mapping):
            found.append(f"{where} is a {type(entry).__name__} (expected a dict)")
            continue
        shapes = rules.initial_buffers(p)
        scalars = rules.scalar_names()
        # stored as saved: low-precision buffers under their own keys (checked by the storage)
        kept = storage.Storage.of(saved, rules, p)
        own = kept.own_keys if kept is not None else frozenset()
        required = [*scalars, *(k for name in shapes for k in (kept.keys(name) if kept is not None else (name,)))]
        if storage.COMPENSATION in own:
            required.append(storage.COMPENSATION)
        allowed = ({*scalars, *shapes, *rules.buffers()} - set(kept.by_name if kept is not None else ())) | own
        if not entry:
            continue  # an empty state: the parameter starts afresh, as torch does
        if kept is not None:
            found += [f"{where}: {problem}" for problem in kept.problems(entry, p)]
        for key in entry:
            if key not in allowed:
                found.append(f"{where}: unknown key {key!r} (expected {', '.join(sorted(allowed)) or 'none'})")
        for key in required:
            if key not in entry:
                found.append(f"{where}: missing {key!r}")
        for key, value in entry.items():
            if key == "step" and key in allowed:
                problem = _step_problem(value)
            elif key in scalars:
                problem = _scalar_problem(key, value)
            elif key in allowed and key not in own:
                problem = _buffer_problem(key, value, p, shapes.get(key, p.shape))
            else:
                continue
            if problem:
                found.append(f"{where}: {problem}")
    return found
