"""Assertions shared by the test suites."""

from __future__ import annotations

from typing import Any, NamedTuple

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


def record_flat_steps(monkeypatch) -> list[bool]:
    """A list that gets, for every bucket's flat step, whether the flat buffers took it
    (``False``: its parameters fell back to the reference path)."""
    from momenta.engine import flat

    taken: list[bool] = []
    real_prepare = flat.prepare

    def prepare(*args):  # type: ignore[no-untyped-def]
        calls, rest = real_prepare(*args)
        taken.append(not rest)
        return calls, rest

    monkeypatch.setattr(flat, "prepare", prepare)
    return taken
