"""Assertions shared by the test suites."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, NamedTuple

import pytest
import torch


def assert_states_close(actual: dict[Any, Any], expected: dict[Any, Any], **tolerance: float) -> None:
    """Two optimizer states (``state_dict()["state"]``) hold the same entries, keys and
    values (within ``tolerance``, ``torch.testing.assert_close``'s; exact without it)."""
    if not tolerance:
        tolerance = dict(rtol=0.0, atol=0.0)
    assert actual.keys() == expected.keys()
    for index, entry in expected.items():
        assert actual[index].keys() == entry.keys(), index
        for key, value in entry.items():
            torch.testing.assert_close(
                actual[index][key], value, **tolerance, msg=lambda m: f"state[{index}][{key!r}]: {m}"
            )


class FailingSGD(torch.optim.SGD):
    """An optimizer whose every step raises (compare records it and goes on)."""

    def step(self, closure=None):  # type: ignore[override]
        raise RuntimeError("this step always fails")


def record_kernel_runs(monkeypatch) -> list[bool]:
    """A list that gets, for every compiled kernel call, whether it ran (``False``: it
    could not, and that slice ran eagerly)."""
    from momenta.engine import kernels

    runs: list[bool] = []
    real_call = kernels.Kernel.__call__
    monkeypatch.setattr(kernels.Kernel, "__call__", lambda self, *a: runs.append(real_call(self, *a)) or runs[-1])
    return runs


def record_graph_builds(monkeypatch) -> list[tuple[Any, ...]]:
    """A list that gets an entry for every kernel graph compiled (a rule structure met
    with a new kind of input): a schedule that recompiled would add one."""
    from momenta.engine import kernels

    built: list[tuple[Any, ...]] = []
    real_build = kernels._Dispatch._build
    monkeypatch.setattr(kernels._Dispatch, "_build", lambda self, *a: built.append(a) or real_build(self, *a))
    return built


class CompiledKernels(NamedTuple):
    """What compiled kernels did during a test (the ``compiled_kernels`` fixture)."""

    runs: list[bool]  # every kernel call: whether it ran (``record_kernel_runs``)
    built: list[tuple[Any, ...]]  # every graph compiled (``record_graph_builds``)


@contextlib.contextmanager
def only_path(path: str) -> Iterator[None]:
    """Every step of a parameter inside the block is taken by ``path``, and at least one
    step is: ``"flat"``, on flat buffers (``flat.prepare`` took the parameter's bucket), or
    ``"reference"``, one parameter at a time (``reference.step``, ``reference.lazy_step``).
    Else AssertionError, naming the shapes the other path stepped: an engine that silently
    took the other path fails the test that uses this. Empty parameters are not counted:
    their step changes nothing, and the engine leaves two or more of them out of the flat
    buffers (their storages all have address 0, which reads as one storage shared)."""
    from momenta.engine import flat, reference

    assert path in ("flat", "reference"), path
    stepped: dict[str, list[tuple[int, ...]]] = {"flat": [], "reference": [], "empty": []}

    def record(kind: str, p: torch.Tensor) -> None:
        stepped["empty" if p.numel() == 0 else kind].append(tuple(p.shape))

    real_prepare = flat.prepare

    def prepare(g, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls, rest = real_prepare(g, *args, **kwargs)
        if not rest:
            for i in g.present:
                record("flat", g.bucket.params[i])
        return calls, rest

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(flat, "prepare", prepare)
        for name in ("step", "lazy_step"):
            real = getattr(reference, name)
            mp.setattr(reference, name, lambda p, *a, _real=real: record("reference", p) or _real(p, *a))
        yield
    other = "reference" if path == "flat" else "flat"
    assert not stepped[other], f"the {other} path stepped parameters of shapes {stepped[other]}"
    assert stepped[path] or stepped["empty"], "no parameter was stepped"
