"""Every private torch API the engine uses, in one place, each with a safe answer when the
running torch no longer offers it (``tests/test_compat.py`` tests each one and its fallback).

| function | torch API | if torch lacks it |
|---|---|---|
| :func:`storage_users` | ``torch._C._storage_Use_Count`` | ``None``: unknown, and :func:`owns_storage` then says *not owned* |
| :func:`copy_all` | ``torch._foreach_copy_`` | a loop of ``Tensor.copy_`` |
| :func:`fused_devices` | ``torch.utils._foreach_utils._get_fused_kernels_supported_devices`` | ``["cuda", "cpu"]`` (torch 2.13's list) |
| :func:`version` | ``Tensor._version`` | ``None``: an in-place change cannot be seen, so callers rebuild |
| :func:`compile_graph` | ``make_fx`` (symbolic) and ``torch._inductor.compile`` | ``None``: the caller uses ``torch.compile`` |
| :class:`ByteCopy` | ``torch._inductor.codecache.CppCodeCache`` (builds a 10-line C function) | ``False`` from every call: the caller uses :func:`copy_all` |

"Safe" means: a missing API costs speed, never correctness. A storage whose users cannot be
counted is treated as shared (the fast path leaves the parameter where it is rather than
re-point it, which would silently orphan a ZeroRedundancyOptimizer bucket view).
"""

from __future__ import annotations

import array
import ctypes
import threading
from collections.abc import Callable, Sequence
from operator import attrgetter, methodcaller
from typing import Any

import torch
from torch import Tensor


def storage_users(t: Tensor) -> int | None:
    """How many tensors hold ``t``'s storage; ``None`` where torch cannot tell."""
    count = getattr(torch._C, "_storage_Use_Count", None)
    if count is None:
        return None
    try:
        # the Python storage object, held while counting, holds one reference itself (torch
        # 2.9 drops it with the object: counted from a temporary, a lone tensor would be 0)
        storage = t.untyped_storage()
        return int(count(storage._cdata)) - 1
    except (AttributeError, RuntimeError, TypeError):
        return None


def owns_storage(t: Tensor) -> bool:
    """``t`` is its storage's only tenant: it spans the whole storage and no other tensor
    holds it (so re-pointing ``p.data`` elsewhere leaves no one behind on the old values).
    ``False`` when torch cannot count a storage's users."""
    return (
        t.storage_offset() == 0
        and t.untyped_storage().nbytes() == t.numel() * t.element_size()
        and storage_users(t) == 1
    )


def copy_all(targets: Sequence[Tensor], sources: Sequence[Tensor]) -> None:
    """``targets[i].copy_(sources[i])`` for every ``i``, in one call where torch can."""
    if not targets:
        return
    copy = getattr(torch, "_foreach_copy_", None)
    if copy is not None:
        try:
            copy(list(targets), list(sources))
            return
        except (RuntimeError, TypeError):  # pragma: no cover - a torch whose signature differs
            pass
    for target, source in zip(targets, sources):
        target.copy_(source)


def fused_devices() -> list[str]:
    """The device types torch's fused optimizer kernels support (quoted in its error)."""
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices
    except ImportError:
        return ["cuda", "cpu"]
    return list(_get_fused_kernels_supported_devices())


def version(t: Tensor) -> int | None:
    """A counter that changes whenever ``t`` is modified in place; ``None`` if unavailable."""
    return getattr(t, "_version", None)


def compile_graph(fn: Callable[..., None], examples: Sequence[Tensor]) -> Callable[..., None] | None:
    """``fn`` (tensors in, in-place updates out) traced once with symbolic sizes and
    compiled by Inductor, callable as ``compiled(*tensors)`` on tensors of any size like the
    ``examples`` (same dtypes, devices, ranks and strides). No dynamo in between: a call
    costs microseconds, not the tens of microseconds dynamo's guards take on a kernel that
    reads many Python values. ``None`` where this torch lacks either API or tracing fails
    (the caller then uses ``torch.compile``)."""
    try:
        import torch._inductor
        from torch.fx.experimental.proxy_tensor import make_fx

        graph = make_fx(fn, tracing_mode="symbolic")(*examples)
        fakes = [node.meta["val"] for node in graph.graph.nodes if node.op == "placeholder"]
        compiled: Any = torch._inductor.compile(graph, fakes)
    except Exception:  # an API gone or changed: torch.compile serves instead
        return None
    return _innermost(compiled) or compiled  # type: ignore[no-any-return]


def _innermost(compiled: Any) -> Callable[..., None] | None:
    """``compiled``, calling the generated code's own ``call`` under the wrappers
    ``torch._inductor.compile`` puts around it (each costs microseconds a call, tens inside
    a training loop) where that is safe: an inference graph that mutates its inputs in
    place, with nothing to check before the call. The first call, and every call while the
    profiler records, go through the wrappers (they finish compile-time bookkeeping and
    record "Torch-Compiled Region"). ``None`` where the layers are not as expected."""
    layer = compiled
    for _ in range(16):
        inner = getattr(layer, "__wrapped__", None)
        if inner is None:
            break
        layer = inner
    call = getattr(layer, "current_callable", None)
    fx_kwargs = getattr(layer, "fx_kwargs", None) or {}
    if not callable(call) or not fx_kwargs.get("is_inference") or getattr(layer, "inputs_to_check", [None]):
        return None

    first = [True]
    profiling = torch.autograd.profiler

    def run(*tensors: Tensor) -> None:
        if first[0] or getattr(profiling, "_is_profiler_enabled", True):
            first[0] = False
            compiled(*tensors)
        else:
            call(list(tensors))

    return run


# -- many small copies at once -------------------------------------------------------------

_COPY_SOURCE = r"""
#include <cstdint>
#include <cstring>
// momenta: n byte ranges copied at once, src[i] -> dst[i], nbytes[i] bytes each
extern "C" void momenta_copy_ranges(int64_t n, const int64_t* src, const int64_t* dst, const int64_t* nbytes) {
    #pragma omp parallel for schedule(static) if (n > 64)
    for (int64_t i = 0; i < n; ++i) {
        std::memcpy(reinterpret_cast<void*>(dst[i]), reinterpret_cast<const void*>(src[i]),
                    static_cast<size_t>(nbytes[i]));
    }
}
"""
_copy_function: Any = None  # the C function; False once building it failed
_copy_lock = threading.Lock()
_shape, _stride, _data_ptr = attrgetter("shape"), methodcaller("stride"), methodcaller("data_ptr")


def _copy_ranges() -> Any:
    """The C function behind :class:`ByteCopy`, built once per process (Inductor's C++
    cache keeps it on disk); ``False`` where it cannot be built."""
    global _copy_function
    with _copy_lock:
        if _copy_function is None:
            try:
                from torch._inductor.codecache import CppCodeCache

                function = CppCodeCache.load(_COPY_SOURCE).momenta_copy_ranges
                function.argtypes = [ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
                function.restype = None
                _copy_function = function
            except Exception:  # no compiler, or the cache's API changed
                _copy_function = False
        return _copy_function


class ByteCopy:
    """``targets[i].copy_(sources[i])`` for every ``i`` in one C call, for CPU tensors laid
    out alike: ``torch._foreach_copy_`` on a CPU dispatches each copy on its own (about a µs
    each: 600 small gradients cost more than the optimizer's update of them), this copies
    the byte ranges in one loop. A call returns ``False``, having copied nothing, unless
    every source has its target's shape and strides (then both are the same dense bytes;
    the targets are regions of a flat buffer, dense by construction) and the C function
    could be built; the caller then copies with :func:`copy_all`. Same dtype and device are
    the caller's to check."""

    def __init__(self, targets: Sequence[Tensor]) -> None:
        self.targets = list(targets)
        self.shapes = list(map(_shape, targets))
        self.strides = [t.stride() for t in targets]
        self._dst = array.array("q", map(_data_ptr, targets))
        self._nbytes = array.array("q", (t.numel() * t.element_size() for t in targets))
        self._usable = all(t.device.type == "cpu" for t in targets)

    def __call__(self, sources: Sequence[Tensor]) -> bool:
        if not self._usable or len(sources) != len(self.targets):
            return False
        if list(map(_shape, sources)) != self.shapes or list(map(_stride, sources)) != self.strides:
            return False
        function = _copy_ranges()
        if function is False:
            self._usable = False
            return False
        src = array.array("q", map(_data_ptr, sources))
        function(len(src), src.buffer_info()[0], self._dst.buffer_info()[0], self._nbytes.buffer_info()[0])
        return True
