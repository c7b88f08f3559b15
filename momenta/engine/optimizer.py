"""The optimizer base: a ``torch.optim.Optimizer`` whose step is a pair of moment rules.

What a subclass implements:

* ``__init__``: pass its hyperparameters to ``super().__init__`` as the param-group
  defaults (schedulers edit param groups, so hyperparameters live there);
* :attr:`Optimizer.checks`: the checks of those values, a table of :mod:`.validation`
  (the engine runs it wherever the values can change);
* :meth:`Optimizer.rules`: the :class:`Rules` of one param group, built from its values.

What the engine owns: param groups, the closure, steps, lazy state, weight decay, maximize,
complex parameters (their real view), epsilon, the fast path, non-finite gradients,
``state_dict`` (torch's, plus the skipped-step count), ``load_state_dict`` (torch's, checked
first and atomic), ``zero_grad`` and hooks (torch's: the same calls and results, with the
profiler range opened only while a profiler records, :func:`.compat.hooked_step`).
"""

from __future__ import annotations

import abc
import math
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from operator import is_
from typing import Any, ClassVar, Literal, cast, overload

import torch
from torch import Tensor

from . import checkpoint, compat, flat, kernels, reference, shards, storage, validation
from .composition import Rules
from .storage import ParamRounding, StatePrecision

ParamsT = Any  # what torch.optim accepts: tensors, named tensors or param-group dicts


def _scalar_dtype(fused: bool | None = None) -> torch.dtype:
    """torch's dtype for ``step``: float32 when fused, else float64 under a float64 default."""
    if fused:
        return torch.float32
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


Nonfinite = Literal["skip", "raise"] | None


@dataclass
class _Plan:
    """A param group between the two phases of a step: gradients gathered, nothing changed."""

    group: dict[str, Any]
    rules: Rules
    hyper: reference.Hyper
    ready: list[flat.Gathered]  # buckets whose gradients are gathered for a flat step
    rest: list[Tensor]  # parameters with a gradient, for the reference path


def _values(grad: Tensor) -> Tensor:
    """A gradient's values (a sparse one's stored values)."""
    return grad.coalesce().values() if grad.is_sparse else grad


def _finite(plans: list[_Plan]) -> bool:
    """All gathered gradients are finite: one reduction per flat bucket and one host sync
    per device, not one per parameter."""
    flags: dict[torch.device, list[Tensor]] = {}
    for plan in plans:
        for gathered in plan.ready:
            device = gathered.bucket.layout.device
            flags.setdefault(device, []).extend(torch.isfinite(g).all() for g in gathered.to_check())
        for p in plan.rest:
            assert p.grad is not None
            flags.setdefault(p.grad.device, []).append(torch.isfinite(_values(p.grad)).all())
    return all(bool(torch.stack(fs).all()) for fs in flags.values())


def _values_key(group: Mapping[str, Any]) -> tuple[Any, ...] | None:
    """What a group's rules depend on: every value but the parameters, tensors by identity
    and version (so an in-place change counts); ``None`` if a value cannot be compared."""
    parts: list[Any] = []
    for key, value in group.items():
        if key in ("params", "param_names"):
            continue
        if isinstance(value, Tensor) or (isinstance(value, tuple) and any(isinstance(v, Tensor) for v in value)):
            value = tuple((id(v), compat.version(v)) if isinstance(v, Tensor) else v for v in _tuple(value))
            if any(isinstance(v, tuple) and v[1] is None for v in value):
                return None  # no version counter: an in-place change could not be seen
        elif not isinstance(value, (int, float, str, bool, tuple, type(None))):
            return None
        parts.append((key, value))
    return tuple(parts)


class _Cached:
    """A group's rules as built from its values, and those values by identity: when every
    value is the very object it was (and none is a tensor, which could change in place),
    the group is unchanged without comparing values (one C-level pass a step)."""

    def __init__(self, group: dict[str, Any], key: tuple[Any, ...], rules: Rules, hyper: reference.Hyper) -> None:
        self.key, self.rules, self.hyper = key, rules, hyper
        self.size = len(group)
        self.names = [k for k in group if k not in ("params", "param_names")]
        self.values = [group[k] for k in self.names]
        self.by_identity = not any(map(_has_tensor, self.values))

    def same(self, group: dict[str, Any]) -> bool:
        return self.by_identity and len(group) == self.size and all(map(is_, map(group.get, self.names, _NOTHING), self.values))


_NOTHING = itertools.repeat(object())  # group.get's default: no value is it


def _has_tensor(value: Any) -> bool:
    return isinstance(value, Tensor) or (isinstance(value, tuple) and any(isinstance(v, Tensor) for v in value))


def _tuple(value: Any) -> tuple[Any, ...]:
    return value if isinstance(value, tuple) else (value,)


def _capture_message(name: str) -> str:
    """Why a step is refused during CUDA graph capture, and what to capture instead."""
    instead = (
        f"torch.optim.{name}(..., capturable=True)"
        if hasattr(torch.optim, name)
        else "a torch.optim optimizer with capturable=True"
    )
    return (
        f"{name}.step() was called while a CUDA stream is capturing a graph: momenta's step "
        "reads the step count on the host, which a CUDA graph cannot record, so nothing was "
        "changed. capturable=True is accepted so that the state (step on the parameter's "
        f"device) matches torch's, not for captured steps: capture {instead} instead, or "
        "take this step outside the captured region"
    )


class Optimizer(torch.optim.Optimizer, metaclass=abc.ABCMeta):
    """``w ← w − lr · m̂ / (√V̂ + ε)``, with ``m`` and ``V`` given by :meth:`rules`.

    Args:
        params: parameters, named parameters, or param-group dicts, as for torch.optim.
        defaults: the default hyperparameters of every param group (``lr`` at least;
            ``eps``, ``weight_decay``, ``maximize`` are read by the engine when present).

    A new optimizer is a subclass with an ``__init__`` and a :meth:`rules` method (and a
    table of :attr:`checks`); see README's "Your own optimizer" for a complete one in ten
    lines.

    ``capturable=True`` is accepted where torch accepts it, and keeps ``step`` on the
    parameter's device as torch does, so that state_dicts move between the two libraries.
    It does not make the step capturable: the step reads the step count on the host, which
    a CUDA graph cannot record, so a step taken while a CUDA stream is capturing raises a
    ``RuntimeError`` before anything changes. Capture torch.optim's class with
    ``capturable=True`` instead.
    """

    #: The checks of a param group's values (:mod:`momenta.engine.validation`), key →
    #: check, in the order they run: at construction, in ``add_param_group``, at a step
    #: after a value changed, in ``load_state_dict``. By default the engine's own keys.
    checks: ClassVar[validation.Checks] = validation.ENGINE

    #: The error raised for a sparse gradient; ``None`` if sparse gradients are accepted
    #: (they are then densified: same numbers as torch, not its memory savings).
    sparse_error: str | None = "{name} does not support sparse gradients"

    #: How an accepted sparse gradient is stepped: ``"dense"`` densifies it (every entry
    #: steps, torch's SGD and Adagrad); ``"lazy"`` steps only the entries it holds, their
    #: state included (:func:`reference.lazy_step`, torch's SparseAdam).
    sparse: Literal["dense", "lazy"] = "dense"

    #: The error raised for a dense gradient (an optimizer of sparse gradients only);
    #: ``None`` if dense gradients are accepted.
    dense_error: str | None = None

    #: The error raised at a step for a complex parameter; ``None`` if complex parameters
    #: are optimised (as their real view).
    complex_error: str | None = None

    #: torch keeps ``step`` as a 0-dim tensor; its SparseAdam, as a Python int.
    tensor_step: bool = True

    #: What a step does when a gradient holds NaN or inf: ``None`` lets the values through,
    #: as torch does; ``"skip"`` skips the whole step (parameters and state unchanged,
    #: :attr:`skipped_steps` counts it); ``"raise"`` raises ``FloatingPointError`` naming
    #: the parameter, with nothing changed.
    nonfinite: Nonfinite = None
    #: Steps skipped by ``nonfinite="skip"`` (also in the state_dict as ``nonfinite_skipped``).
    skipped_steps: int = 0

    def __init__(
        self,
        params: ParamsT,
        defaults: Mapping[str, Any],
        *,
        nonfinite: Nonfinite = None,
        state_precision: StatePrecision = None,
        param_rounding: ParamRounding = None,
    ) -> None:
        if "lr" not in defaults:
            raise TypeError(f"{type(self).__name__} needs an 'lr' in its defaults")
        if nonfinite not in (None, "skip", "raise"):
            raise ValueError(f"Invalid nonfinite: {nonfinite!r} (expected None, 'skip' or 'raise')")
        defaults = dict(defaults)
        # in the param groups only when asked for: by default a group's keys are torch's
        if state_precision is not None:
            defaults["state_precision"] = dict(state_precision) if isinstance(state_precision, Mapping) else state_precision
        if param_rounding is not None:
            defaults["param_rounding"] = param_rounding
        checks = self.checks_of(defaults)
        validation.run(checks, defaults, "arguments")  # before the parameters, as torch
        storage.check(defaults, None, [])
        super().__init__(params, defaults)
        validation.run(checks, defaults, "flags")  # torch checks fused & co. after them
        if isinstance(state_precision, Mapping):  # every buffer it names is one of ours
            storage.check(defaults, frozenset().union(*(self.rules(g).buffers() for g in self.param_groups)), [])
        self.state = flat.TrackedState(dict, self.state)
        self.nonfinite = nonfinite
        self.skipped_steps = 0
        #: steps taken, the count of stochastic rounding for rules that count no steps of
        #: their own (SGD's): in the state_dict as ``rounding``. (Its seed is the param
        #: group's ``rounding_seed``, so that distributed checkpoints keep it too.)
        self.rounding_steps = 0

    @abc.abstractmethod
    def rules(self, group: dict[str, Any]) -> Rules:
        """The rules of param group ``group``, built from its current hyperparameters."""

    def checks_of(self, group: Mapping[str, Any]) -> validation.Checks:
        """The checks of param group ``group``: :attr:`checks` (an optimizer whose groups
        are of several kinds chooses by group, as MuonWithAdamW)."""
        return self.checks

    # -- the step ------------------------------------------------------------------------

    @overload
    def step(self, closure: None = None) -> None: ...

    @overload
    def step(self, closure: Callable[[], float]) -> float: ...

    @compat.hooked_step
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """One optimisation step; returns ``closure()`` (evaluated with grad) if given.

        Two phases: every gradient is first gathered (into flat buffers where the fast path
        runs) and, with ``nonfinite`` set, checked; only then do parameters and state change.
        Refused while a CUDA stream is capturing (see ``capturable`` in :class:`Optimizer`).
        """
        if torch.cuda.is_available() and torch.cuda.is_current_stream_capturing():
            raise RuntimeError(_capture_message(type(self).__name__))
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        with torch.set_grad_enabled(bool(self.defaults.get("differentiable", False))):
            plans = self._plans()
            if self.nonfinite is not None and not _finite(plans):
                if self.nonfinite == "raise":
                    raise FloatingPointError(self._nonfinite_message())
                self.skipped_steps += 1
                return loss
            if self._stores():
                # (only then: dynamo before torch 2.13 cannot trace the attribute's update)
                self.rounding_steps += 1
                self.__dict__["_indices"] = None  # the parameters' places, found anew once
            calls = [call for plan in plans for call in self._apply(plan)]
            flat.execute(calls)
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        """torch's ``zero_grad``: every gradient set to ``None`` (default) or detached and
        zeroed in place (by device and dtype in one call with ``foreach``/``fused``). The
        profiler range ``Optimizer.zero_grad#<class>.zero_grad`` is opened only while a
        profiler records, as for the step (:func:`.compat.hooked_step`)."""
        if compat.profiling():
            super().zero_grad(set_to_none)
            return
        foreach = self.defaults.get("foreach", False) or self.defaults.get("fused", False)
        by_kind: dict[tuple[torch.device, torch.dtype], list[Tensor]] = {}
        for group in self.param_groups:
            for p in group["params"]:
                grad = p.grad
                if grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                    continue
                if grad.grad_fn is not None:
                    grad.detach_()
                else:
                    grad.requires_grad_(False)
                if not foreach or grad.is_sparse:
                    grad.zero_()
                else:
                    by_kind.setdefault((grad.device, grad.dtype), []).append(grad)
        for grads in by_kind.values():
            compat.zero_all(grads)

    def _plans(self) -> list[_Plan]:
        """Phase one of a step, for every param group: rules checked, flat buffers current,
        gradients gathered. Nothing of the parameters or the state has changed."""
        groups = [(group, *self._rules_of(index, group)) for index, group in enumerate(self.param_groups)]
        self._convert_changed_storage(groups)
        flats: list[flat.FlatGroup | None] = []
        for index, (group, rules, _) in enumerate(groups):
            if self.complex_error is not None or self.dense_error is not None:
                self._refuse(group)
            flats.append(self._flat_group(index, group, rules) if self._uses_flat(group, rules) else None)
        # compiled kernels or eager ones: decided by the optimizer's size alone, the same at
        # every step (a resumed run takes the uninterrupted run's path)
        self._compiled = sum(f.numel for f in flats if f) >= kernels.config.compile_min_numel
        # the C++ checks and copies: for an optimizer that compiles or has many tensors (this
        # chooses how to check and copy, never what the step computes)
        self._native = kernels.config.compile and (
            self._compiled or sum(len(f.params) for f in flats if f) >= kernels.config.native_min_tensors
        )
        plans = []
        for (group, rules, hyper), flat_group in zip(groups, flats):
            ready: list[flat.Gathered] = []
            if flat_group is None:
                rest = [p for p in group["params"] if p.grad is not None]
            else:
                direct = self._compiled and kernels.config.compile and kernels.compilable(rules)
                ready, rest = flat_group.gather(direct, native=self._native)
            plans.append(_Plan(group, rules, hyper, ready, rest))
        return plans

    def _convert_changed_storage(self, groups: list[tuple[dict[str, Any], Rules, reference.Hyper]]) -> None:
        """A group whose ``state_precision`` or ``param_rounding`` changed since its last
        step (a user's edit) has its states converted from the old storage to the new one
        before anything else reads them (:mod:`.storage`)."""
        specs: dict[int, Any] = self.__dict__.setdefault("_storage_specs", {})
        for index, (group, rules, _) in enumerate(groups):
            spec = storage.spec(group)
            before = specs.get(index, spec)
            specs[index] = spec
            if before == spec:
                continue
            old_group = {**{k: v for k, v in group.items() if k not in storage.KEYS}, **before}
            for p in group["params"]:
                state = self.state.get(p)
                was, now = storage.Storage.of(old_group, rules, p), storage.Storage.of(group, rules, p)
                if state and was != now:
                    storage.convert(state, p, was, now)
                    self.state[p] = state  # a new version: the fast path adopts it anew
            if spec and "rounding_seed" not in group:
                group["rounding_seed"] = torch.initial_seed()

    def _rules_of(self, index: int, group: dict[str, Any]) -> tuple[Rules, reference.Hyper]:
        """The group's rules and engine hyperparameters, checked; rebuilt only when a value
        changed since the last step (a scheduler, a user), else reused."""
        cache: dict[int, _Cached] = self.__dict__.setdefault("_rules_cache", {})
        cached = cache.get(index)
        if cached is not None and cached.same(group):
            return cached.rules, cached.hyper
        key = _values_key(group)
        if key is not None and cached is not None and cached.key == key:
            cache[index] = _Cached(group, key, cached.rules, cached.hyper)
            return cached.rules, cached.hyper
        rules, hyper = validation.checked_rules(self, group), reference.Hyper.of(group)
        if storage.spec(group):
            storage.check(group, rules.buffers() if isinstance(group.get("state_precision"), Mapping) else None,
                          group["params"], f" (param group {index})", rules.elementwise)  # fmt: skip
        if key is not None:
            cache[index] = _Cached(group, key, rules, hyper)
        return rules, hyper

    def _apply(self, plan: _Plan) -> list[flat.Call]:
        """Phase two, on the host: the flat buckets' calls prepared (returned, to run after
        every group's), the reference path's parameters stepped."""
        group, rules, hyper = plan.group, plan.rules, plan.hyper
        tracked = cast(flat.TrackedState, self.state)  # installed in __init__ and __setstate__
        rest = list(plan.rest)
        calls: list[flat.Call] = []
        new_state = lambda p: self.new_state(p, group, rules)  # noqa: E731
        for gathered in plan.ready:
            prepared, left = flat.prepare(
                gathered, rules, hyper, tracked, new_state, self._compiled, type(self).__name__, native=self._native,
                bits=lambda p, t: self._bits(group, p, t),
            )
            calls += prepared
            rest += left
        for p in rest:
            grad = self._gradient(p, group)
            # .get: reading must not create an entry (torch's SGD without momentum keeps
            # no state at all, and state_dicts must agree)
            state = self.state.get(p) or self.new_state(p, group, rules)
            kept = storage.Storage.of(group, rules, p)
            if kept is not None:
                t = float(state["step"]) + 1 if torch.is_tensor(state.get("step")) else math.nan
                bits = self._bits(group, p, t) if kept.random else None
                reference.step(p, grad, state, rules, hyper, kept, bits)
            else:
                step = reference.lazy_step if grad.is_sparse else reference.step
                step(p, grad, state, rules, hyper)
            if state and self.state.get(p) is not state:
                self.state[p] = state
        return calls

    def _bits(self, group: dict[str, Any], p: Tensor, t: float) -> storage.Bits:
        """``p``'s random bits at its step ``t`` (stochastic rounding): from the group's seed
        and the step (the optimizer's count of steps where the rules count none)."""
        count = self.rounding_steps if math.isnan(t) else int(t)
        return storage.Bits.of(group["rounding_seed"], count, self._index(p))

    def _index(self, p: Tensor) -> int:
        """``p``'s place in the optimizer (its id in state_dicts): where its random bits
        come from. Found once a step (:meth:`step` forgets them), not once a parameter."""
        index: dict[int, int] | None = self.__dict__.get("_indices")
        if index is None:
            ps = (q for group in self.param_groups for q in group["params"])
            index = self.__dict__["_indices"] = {id(q): k for k, q in enumerate(ps)}
        return index[id(p)]

    def _stores(self) -> bool:
        """Some param group asks for low-precision state or rounded weights."""
        return any(map(storage.spec, self.param_groups))

    def _nonfinite_message(self) -> str:
        for g_index, group in enumerate(self.param_groups):
            names = group.get("param_names")
            for p_index, p in enumerate(group["params"]):
                if p.grad is not None and not bool(torch.isfinite(_values(p.grad)).all()):
                    name = f"{names[p_index]!r} " if names else ""
                    return (
                        f"non-finite gradient (NaN or inf) in parameter {name}(param group "
                        f"{g_index}, index {p_index}, shape {tuple(p.shape)}); the step was not "
                        "taken: parameters and state are unchanged (nonfinite='raise')"
                    )
        return "non-finite gradient; the step was not taken (nonfinite='raise')"

    # -- the fast path -------------------------------------------------------------------

    def _uses_flat(self, group: dict[str, Any], rules: Rules) -> bool:
        """Flat buffers unless they are off (``MOMENTA_FLAT=0``, :data:`kernels.config`
        ``.flat``), the for-loop is asked for (``foreach=False``), autograd must
        see the step (``differentiable``), a rule is neither elementwise nor segmented
        (rows, columns, matrices), every gradient is sparse (``dense_error``: nothing to
        flatten), or torch.compile is tracing the step (it fuses the reference path itself;
        the fast path's bookkeeping, identity checks and host reads, is not for tracing)."""
        return (
            kernels.config.flat
            and not torch.compiler.is_compiling()
            and self.dense_error is None
            and group.get("foreach") is not False
            and not group.get("differentiable")
            and rules.flat
        )

    def _flat_group(self, index: int, group: dict[str, Any], rules: Rules) -> flat.FlatGroup:
        """The group's flat buffers, rebuilt when its parameters changed or moved, or how
        it stores its state (``state_precision``, ``param_rounding``)."""
        cache: dict[int, flat.FlatGroup] = self.__dict__.setdefault("_flat_groups", {})
        found, params = cache.get(index), group["params"]
        spec = storage.spec(group)
        # the C++ checks as at the last step (see _plans)
        if found is None or found.spec != spec or not found.current(params, native=self.__dict__.get("_native", False)):
            storage_of = (lambda p: storage.Storage.of(group, rules, p)) if spec else None
            found = cache[index] = flat.FlatGroup(params, previous=found, storage_of=storage_of, spec=spec)
        return found

    def _gradient(self, p: Tensor, group: dict[str, Any]) -> Tensor:
        grad = p.grad
        assert grad is not None
        if grad.is_sparse:
            if self.sparse_error is not None:
                raise RuntimeError(self.sparse_error.format(name=type(self).__name__))
            if group.get("weight_decay", 0) != 0:
                self.check_sparse_weight_decay()
            if self.sparse == "dense":
                grad = grad.coalesce().to_dense()
        return grad

    def _refuse(self, group: dict[str, Any]) -> None:
        """Before anything changes: a complex parameter or a dense gradient this optimizer
        does not take raises its error (torch's message)."""
        name = type(self).__name__
        for p in group["params"]:
            if p.grad is None:
                continue
            if self.complex_error is not None and p.is_complex():
                raise RuntimeError(self.complex_error.format(name=name))
            if self.dense_error is not None and not p.grad.is_sparse:
                raise RuntimeError(self.dense_error.format(name=name))

    def check_sparse_weight_decay(self) -> None:
        """Called for a sparse gradient in a group with weight decay (torch's SGD allows it)."""

    def new_state(
        self, p: Tensor, group: dict[str, Any], rules: Rules | None = None
    ) -> dict[str, Any]:
        """A new state for ``p``: ``step`` where counted, then the rules' buffers."""
        fused = bool(group.get("fused"))
        if fused:
            devices = compat.fused_devices()
            if not (p.device.type in devices and torch.is_floating_point(p)):
                raise RuntimeError(
                    "`fused=True` requires all the params to be floating point Tensors of "
                    f"supported devices: {devices} but {p.dtype} and {p.device.type}"
                )
        # Where torch keeps `step`: on the parameter's device when capturable or fused
        # (float32 when fused), else a CPU scalar, so that state_dicts are interchangeable.
        on_device = fused or bool(group.get("capturable"))
        step = torch.zeros(
            (), dtype=_scalar_dtype(fused), device=p.device if on_device else "cpu"
        )
        state: dict[str, Any] = {}
        rules = rules or self.rules(group)
        reference.init_state(rules, p, state, step)
        if not self.tensor_step and "step" in state:
            state["step"] = 0
        kept = storage.Storage.of(group, rules, p)
        if kept is not None:
            kept.store(state, p)
        return state

    # -- param groups and state_dicts ---------------------------------------------------

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """torch's ``add_param_group``, after checking the group's own hyperparameters and
        the rules they make (so that a bad value is refused before the group joins, not at a
        later step; the defaults were checked at construction)."""
        if isinstance(param_group, Mapping):
            own = {k: v for k, v in param_group.items() if k not in ("params", "param_names")}
            if own:
                validation.checked_rules(self, {**self.defaults, **own})
            params = param_group.get("params")
            params = [params] if isinstance(params, Tensor) else list(params or [])
            for i, p in enumerate(params):
                p = p[1] if isinstance(p, tuple) else p
                if isinstance(p, Tensor) and p.device.type == "meta":
                    raise ValueError(
                        f"parameter {i} of param group {len(self.param_groups)} is on the meta "
                        "device, where it has no values to optimise; materialise the model "
                        "first (model.to_empty(device=...) and initialise it)"
                    )
            param_group = {**param_group, "params": params} if "params" in param_group else param_group
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        if storage.spec(group):
            # stochastic rounding's seed: torch's initial seed (runs seeded alike round alike)
            group.setdefault("rounding_seed", torch.initial_seed())
            try:
                sharded = any(map(shards.sharded, group["params"]))  # (its rules: only then asked)
                elementwise = self.rules(group).elementwise if sharded else True
                storage.check(group, None, group["params"], f" (param group {len(self.param_groups) - 1})", elementwise)
            except BaseException:  # (building the rules may refuse a value too)
                self.param_groups.pop()  # refused: nothing changed
                raise

    def state_dict(self) -> dict[str, Any]:
        """torch's state_dict; with ``nonfinite`` set, also ``nonfinite_skipped``; with a
        low-precision state or rounded weights, also ``rounding`` (stochastic rounding's seed
        and count of steps, so that a resumed run rounds as the uninterrupted one)."""
        sd = super().state_dict()
        if self.nonfinite is not None or self.skipped_steps:
            sd["nonfinite_skipped"] = self.skipped_steps
        if self._stores():
            sd["rounding"] = {"steps": self.rounding_steps}
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """torch's ``load_state_dict``, made atomic: the whole state_dict is checked against
        this optimizer first (groups, parameters, state keys, shapes, steps, the
        hyperparameters of every group, with state or not); on any mismatch a ``ValueError`` lists every difference and the
        optimizer is left exactly as it was."""
        found = checkpoint.problems(self, state_dict)
        if found:
            raise ValueError(
                f"{type(self).__name__}.load_state_dict: the state_dict does not fit this "
                "optimizer; nothing was loaded:\n- " + "\n- ".join(found)
            )
        before = (self.state, self.param_groups, self.skipped_steps)
        own = [{**storage.spec(g), **({"rounding_seed": g["rounding_seed"]} if "rounding_seed" in g else {})} for g in self.param_groups]
        try:
            super().load_state_dict(state_dict)
        except BaseException:
            self.state, self.param_groups, self.skipped_steps = before
            raise
        self.skipped_steps = int(state_dict.get("nonfinite_skipped", 0))
        rounding = state_dict.get("rounding")
        if rounding is not None:
            self.rounding_steps = rounding["steps"]
        self._keep_scalar_state(state_dict)
        self._keep_storage(state_dict, own)

    def _keep_storage(self, state_dict: dict[str, Any], own: list[dict[str, Any]]) -> None:
        """This optimizer's ``state_precision`` and ``param_rounding`` stay its own (torch's
        ``load_state_dict`` takes a group's values from the state_dict), and each state is
        converted from how it was saved to how this optimizer stores it: a float32 state
        (momenta's or torch.optim's) is coded, a coded one decoded. Stored buffers are taken
        as saved: torch casts every state tensor to its parameter's dtype (codes too)."""
        saved_state = state_dict["state"]
        for saved, group, mine in zip(state_dict["param_groups"], self.param_groups, own):
            seed = group.get("rounding_seed", mine.pop("rounding_seed", None))  # the saved one
            for key in storage.KEYS:
                group.pop(key, None)
            group.update(mine)
            if seed is not None and storage.spec(group):
                group["rounding_seed"] = seed
            if not storage.spec(saved) and not storage.spec(group):
                continue
            rules = self.rules(group)
            for index, p in zip(saved["params"], group["params"]):
                entry, state = saved_state.get(index), self.state.get(p)
                if not entry or not state:
                    continue
                was = storage.Storage.of(saved, rules, p)
                for key in was.own_keys if was is not None else ():
                    if key in entry:
                        state[key] = entry[key].detach().to(p.device).clone()
                storage.convert(state, p, was, storage.Storage.of(group, rules, p))

    def _keep_scalar_state(self, state_dict: dict[str, Any]) -> None:
        """The rules' scalar state (NAdam's ``mu_product``, ASGD's ``eta`` …) as saved:
        torch's ``load_state_dict`` casts every state tensor but ``step`` to the parameter's
        dtype, and a float32 product continued in float64 would not resume exactly."""
        saved = state_dict["state"]
        for saved_group, group in zip(state_dict["param_groups"], self.param_groups):
            names = [n for n in self.rules(group).scalar_names() if n != "step"]
            if not names:
                continue
            for index, p in zip(saved_group["params"], group["params"]):
                entry, state = saved.get(index), self.state.get(p)
                if not entry or not state:
                    continue
                for name in names:
                    if torch.is_tensor(entry.get(name)) and name in state:
                        state[name] = entry[name].detach().clone()

    # -- state_dict compatibility --------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:  # pickling and deepcopy keep the policy
        return {
            **super().__getstate__(),
            "nonfinite": self.nonfinite,
            "skipped_steps": self.skipped_steps,
            "rounding_steps": self.rounding_steps,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        defaults = dict(getattr(self, "defaults", {}))  # before torch adds its own keys
        super().__setstate__(state)
        self.__dict__.setdefault("rounding_steps", 0)  # pickled before it existed
        self.state = flat.TrackedState(dict, self.state)
        for group in self.param_groups:  # groups saved by older versions lack newer keys
            for key, value in defaults.items():
                group.setdefault(key, value)
            on_device = bool(group.get("capturable")) or bool(group.get("fused"))
            for p in group["params"]:
                s = self.state.get(p, {})
                # very old checkpoints kept step as a number (torch's SparseAdam still does)
                if self.tensor_step and "step" in s and not torch.is_tensor(s["step"]):
                    s["step"] = torch.tensor(
                        float(s["step"]),
                        dtype=_scalar_dtype(group.get("fused")),
                        device=p.device if on_device else None,
                    )

    # -- description ---------------------------------------------------------------------

    def formulas(self, group: int = 0) -> dict[str, str]:
        """The m rule, the V rule and the update of param group ``group``, as formulas (in the
        group's own terms: no ε where its ``eps`` is 0)."""
        values = self.param_groups[group]
        eps = values.get("eps")
        return self.rules(values).formulas(eps=eps if isinstance(eps, (int, float)) else None)
