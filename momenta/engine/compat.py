"""Every private torch API the engine uses, in one place, each with a safe answer when the
running torch no longer offers it (``tests/test_compat.py`` tests each one and its fallback).

| function | torch API | if torch lacks it |
|---|---|---|
| :func:`storage_users` | ``torch._C._storage_Use_Count`` | ``None``: unknown, and :func:`owns_storage` then says *not owned* |
| :func:`copy_all` | ``torch._foreach_copy_`` | a loop of ``Tensor.copy_`` |
| :func:`zero_all` | ``torch._foreach_zero_`` | a loop of ``Tensor.zero_`` |
| :func:`fused_devices` | ``torch.utils._foreach_utils._get_fused_kernels_supported_devices`` | ``["cuda", "cpu"]`` (torch 2.13's list) |
| :func:`version` | ``Tensor._version`` | ``None``: an in-place change cannot be seen, so callers rebuild |
| :func:`compile_graph` | ``make_fx`` (symbolic) and ``torch._inductor.compile`` | ``None``: the caller uses ``torch.compile`` |
| :func:`native` | ``torch._inductor.codecache.CppCodeCache`` and torch's C++ headers (``THPVariable_Unpack``: builds ``native.cpp``) | ``None``: the caller's Python path (per-tensor checks, :func:`copy_all`) |
| :func:`hooked_step` | ``torch.optim.optimizer._global_optimizer_pre_hooks`` / ``_post_hooks`` | torch's own wrapper, ``Optimizer.profile_hook_step`` |
| :func:`profiling` | ``torch.autograd.profiler._is_profiler_enabled``, ``torch._C._autograd._profiler_enabled`` | ``True``: the profiler range is always recorded, as torch does |

"Safe" means: a missing API costs speed, never correctness. A storage whose users cannot be
counted is treated as shared (the fast path leaves the parameter where it is rather than
re-point it, which would silently orphan a ZeroRedundancyOptimizer bucket view).
"""

from __future__ import annotations

import array
import ctypes
import functools
import getpass
import hashlib
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from itertools import chain
from pathlib import Path
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


def zero_all(tensors: Sequence[Tensor]) -> None:
    """``t.zero_()`` for every tensor, in one call where torch can."""
    zero = getattr(torch, "_foreach_zero_", None)
    if zero is not None:
        try:
            zero(list(tensors))
            return
        except (RuntimeError, TypeError):  # pragma: no cover - a torch whose signature differs
            pass
    for t in tensors:
        t.zero_()


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


def profiling() -> bool:
    """A profiler is recording (torch's or one started from C++), or torch.compile is tracing
    (it keeps profiler ranges in its graph); ``True`` where torch cannot tell."""
    if torch.compiler.is_compiling():
        return True
    flag = getattr(torch.autograd.profiler, "_is_profiler_enabled", True)
    enabled = getattr(torch._C._autograd, "_profiler_enabled", None)
    return bool(flag) or enabled is None or bool(enabled())


def hooked_step(func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` (an optimizer's ``step``) wrapped as torch's ``Optimizer.profile_hook_step``
    wraps it: the global and the optimizer's step pre-hooks (a hook may return new
    ``(args, kwargs)``), the step, ``_optimizer_step_code()``, the post-hooks, all inside the
    profiler range ``Optimizer.step#<class>.step``, but the range is opened only while
    :func:`profiling`. Opening it costs 120–200 µs in a training loop (its code is cold after
    forward and backward) for nobody when no profiler listens. Marked ``hooked`` so that
    torch does not wrap it again. Where torch keeps its global hooks elsewhere: torch's
    wrapper itself."""
    from torch.optim import optimizer as torch_optimizer

    pre = getattr(torch_optimizer, "_global_optimizer_pre_hooks", None)
    post = getattr(torch_optimizer, "_global_optimizer_post_hooks", None)
    if not isinstance(pre, Mapping) or not isinstance(post, Mapping):
        wrapped = torch.optim.Optimizer.profile_hook_step(func)
        wrapped.hooked = True  # type: ignore[attr-defined]
        return wrapped

    def run(self: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        # as torch's: ``args`` includes ``self``, and a pre-hook may replace both
        for pre_hook in chain(pre.values(), self._optimizer_step_pre_hooks.values()):
            result = pre_hook(self, args, kwargs)
            if result is not None:
                if isinstance(result, tuple) and len(result) == 2:
                    args, kwargs = result
                else:
                    raise RuntimeError(f"{func} must return None or a tuple of (new_args, new_kwargs), but got {result}.")
        out = func(*args, **kwargs)
        self._optimizer_step_code()
        for post_hook in chain(self._optimizer_step_post_hooks.values(), post.values()):
            post_hook(self, args, kwargs)
        return out

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        self = args[0]
        if profiling():
            with torch.autograd.profiler.record_function(f"Optimizer.step#{type(self).__name__}.step"):
                return run(self, args, kwargs)
        return run(self, args, kwargs)

    wrapper.hooked = True  # type: ignore[attr-defined]
    return wrapper


def compile_graph(fn: Callable[..., None], examples: Sequence[Tensor], options: Mapping[str, Any] | None = None) -> Callable[..., None] | None:
    """``fn`` (tensors in, in-place updates out) traced once with symbolic sizes and
    compiled by Inductor, callable as ``compiled(*tensors)`` on tensors of any size like the
    ``examples`` (same dtypes, devices, ranks and strides). No dynamo in between: a call
    costs microseconds, not the tens of microseconds dynamo's guards take on a kernel that
    reads many Python values. ``None`` where this torch lacks either API or tracing fails
    (the caller then uses ``torch.compile``). ``options``: Inductor's config while it
    compiles (as ``torch.compile(options=…)``)."""
    try:
        import torch._inductor
        import torch._inductor.config
        from torch.fx.experimental.proxy_tensor import make_fx

        graph = make_fx(fn, tracing_mode="symbolic")(*examples)
        fakes = [node.meta["val"] for node in graph.graph.nodes if node.op == "placeholder"]
        with torch._inductor.config.patch(dict(options or {})):
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


# -- the per-step checks and gathering in C++ -------------------------------------------------

_NATIVE_SOURCE = Path(__file__).with_name("native.cpp")


class Native:
    """The C++ functions of ``native.cpp``, one call each for what would be a Python pass
    per tensor. Each only reads until its checks pass, and answers "not the usual case"
    for anything it does not know (the caller's Python path then runs, with torch's errors).
    The lists passed must be plain ``list`` objects."""

    def __init__(self, path: str) -> None:
        library = ctypes.PyDLL(path)  # PyDLL: the GIL stays held (the functions read Python objects)
        self._holds = library.momenta_holds
        self._holds.argtypes, self._holds.restype = [ctypes.py_object, ctypes.c_void_p], ctypes.c_int64
        self._same = library.momenta_same_values
        self._same.argtypes, self._same.restype = [ctypes.py_object, ctypes.py_object], ctypes.c_int64
        self._gather = library.momenta_gather
        self._gather.argtypes = [ctypes.py_object, ctypes.py_object, ctypes.c_char_p, ctypes.py_object]
        self._gather.restype = ctypes.c_int64
        self._medians = {torch.float32: library.momenta_median_f32, torch.float64: library.momenta_median_f64}
        for fn in self._medians.values():
            fn.argtypes, fn.restype = [ctypes.c_void_p, ctypes.c_int64], ctypes.c_double

    def holds(self, params: list[Tensor], ptrs: array.array[int]) -> bool:
        """Every ``params[i].data_ptr() == ptrs[i]``."""
        return bool(self._holds(params, ptrs.buffer_info()[0]))

    def same_values(self, dicts: list[dict[str, Any]], held: list[Any]) -> bool:
        """The values of ``dicts``, in order, are the objects of ``held``."""
        return bool(self._same(dicts, held))

    def median(self, x: Tensor) -> float | None:
        """The lower median of 1-D ``x``'s entries that are not NaN, as ``torch.median``
        takes it (NaN where none is), by a radix select whose time does not depend on the
        data (``native.cpp``); ``None`` unless ``x`` is a contiguous float32 or float64 CPU
        tensor."""
        fn = self._medians.get(x.dtype)
        if fn is None or x.device.type != "cpu" or x.dim() != 1 or not x.is_contiguous():
            return None
        return float(fn(x.data_ptr(), x.numel()))

    def gather(self, params: list[Tensor], regions: list[Tensor | None], large: bytes) -> tuple[int, list[Tensor]]:
        """The gradients of ``params`` against their ``regions`` of a flat gradient buffer
        (``None`` for the large parameters, ``large[i]``, whose gradients are used where
        autograd put them). ``(IN_PLACE, used)`` when every small ``params[i].grad is
        regions[i]``; ``(FRESH, used)`` when every small gradient is a fresh plain tensor
        of its region's dtype, device, shape and strides, on the CPU: they have been copied
        into their regions. ``used`` holds the large gradients, in order, as 1-D views
        (:func:`~.layout.as_flat`; each must be a plain tensor strided like its parameter).
        Else ``(0, [])``, nothing copied."""
        used: list[Tensor] = []
        found = int(self._gather(params, regions, large, used))
        return found, used if found else []


IN_PLACE, FRESH = 1, 2
_native: Native | None | bool = None  # None: not looked for; True: being built; False: cannot be
_native_lock = threading.Lock()
_builder: subprocess.Popen[bytes] | None = None  # the process building it, started by this one
_next_look = 0.0  # while it is built: when to look for the build again (time.monotonic)


def native(wait: bool = False) -> Native | None:
    """The C++ functions (:class:`Native`), built once per machine and torch by Inductor's
    C++ code cache (about 15 s), in a process of its own at low priority that outlives a
    short script. Where a build is noted (:func:`_index`), the first call loads it in a
    millisecond; else it starts the build and returns ``None`` (the caller takes its Python
    path, with the same results), looking for the build at most once a second; ``wait``
    waits for it. ``None`` for good where it cannot be built (no compiler, a torch whose
    headers or cache API differ: noted too, and not tried again)."""
    global _native, _next_look
    if isinstance(_native, Native):
        return _native
    with _native_lock:
        while True:
            if _native is None:
                _native = _noted()
                if _native is None:
                    _native = _start_build()
            elif _native is True and (wait or time.monotonic() >= _next_look):
                found = _noted()
                if found is not None:
                    _native = found
                elif _builder is None or _builder.poll() is not None:  # it ended without a note
                    _native = False
                _next_look = time.monotonic() + 1.0
            if not (wait and _native is True):
                break
            time.sleep(0.1)
    return _native if isinstance(_native, Native) else None


def cache_root() -> Path:
    """Inductor's cache directory, in Inductor's default place (asking Inductor costs a
    second's import): momenta's own builds are kept beside its kernels."""
    try:
        user = getpass.getuser()
    except (KeyError, ModuleNotFoundError, OSError):
        user = f"uid_{os.getuid()}" if hasattr(os, "getuid") else "unknown_user"
    return Path(
        os.environ.get("TORCHINDUCTOR_CACHE_DIR")
        or os.path.join(tempfile.gettempdir(), "torchinductor_" + re.sub(r"[\\/:*?\"<>|]", "_", user))
    )


def _index() -> Path:
    """Where the build of ``native.cpp`` for this source, torch and Python is noted: its
    library's path, or ``failed: …`` (in :func:`cache_root`)."""
    key = hashlib.sha256(_NATIVE_SOURCE.read_bytes() + f"{torch.__version__} {sys.version}".encode()).hexdigest()
    return cache_root() / "momenta" / f"native-{key[:24]}.path"


def _noted() -> Native | bool | None:
    """The noted build: loaded, ``False`` if it failed, ``None`` if there is none (yet)."""
    try:
        note = _index().read_text().strip()
    except OSError:
        return None
    if note.startswith("failed"):
        return False
    try:
        return Native(note) if os.path.isfile(note) else None
    except (OSError, AttributeError):  # a library of another build: build again
        return None


# the builder process: idle priority first (importing torch takes a second of CPU too)
_BUILDER = """
import contextlib, os
with contextlib.suppress(OSError, AttributeError):
    os.nice(19)
with contextlib.suppress(OSError, AttributeError):
    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
from momenta.engine import compat
compat.build_and_note()
"""


def _start_build() -> bool:
    """Start the build in a process of its own (``True``), or ``False`` if none can start."""
    global _builder
    root = str(Path(__file__).resolve().parents[2])  # where this momenta is imported from
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    try:
        _builder = subprocess.Popen(
            [sys.executable, "-c", _BUILDER],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env=env, start_new_session=True,
        )  # fmt: skip
    except OSError:
        return False
    return True


def build_and_note() -> None:
    """Build ``native.cpp`` and note where the library is, or that it cannot be built here:
    the builder process's work (:data:`_BUILDER`), which runs only on otherwise idle cores
    (Linux's SCHED_IDLE, else the lowest priority) so that a training process's threads keep
    theirs. Only a failure that will recur is noted (no compiler, code this torch's headers
    or loader reject); anything else (a source gone with its temporary clone, a full disk)
    notes nothing, and the next process tries again."""
    index = _index()
    try:
        from torch._inductor.codecache import CppCodeCache

        path = CppCodeCache.load(_NATIVE_SOURCE.read_text())._name
        Native(path)  # it loads, with its functions
        note = path
    except Exception as error:
        if type(error).__name__ not in _LASTING_FAILURES:
            raise
        note = f"failed: {type(error).__name__}: {str(error)[:500]}"
    index.parent.mkdir(parents=True, exist_ok=True)
    partial = index.with_suffix(f".{os.getpid()}")
    partial.write_text(note)
    partial.replace(index)  # whole, for a reader in another process


#: failures of the build that the next attempt would repeat (Inductor's compile errors, no
#: compiler, a library without the functions)
_LASTING_FAILURES = frozenset({"CppCompileError", "InvalidCxxCompiler", "CalledProcessError", "AttributeError"})
