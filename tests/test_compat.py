"""Every private torch API the engine uses (momenta/engine/compat.py) works on this torch, and
each fails safe when torch no longer offers it: slower, never wrong."""

from __future__ import annotations

import array

import pytest
import torch

import momenta
from momenta.engine import compat


def test_storage_users_counts_the_tensors_holding_a_storage():
    a = torch.zeros(6)
    assert compat.storage_users(a) == 1
    b = a[:3]  # noqa: F841 - a second tenant
    assert compat.storage_users(a) == 2
    assert compat.owns_storage(torch.zeros(4))
    assert not compat.owns_storage(torch.zeros(8)[:4])  # a view of a larger storage


def test_without_a_storage_count_nothing_is_owned(monkeypatch):
    monkeypatch.delattr(torch._C, "_storage_Use_Count")
    assert compat.storage_users(torch.zeros(3)) is None
    assert not compat.owns_storage(torch.zeros(3))
    # the fast path then leaves every parameter where it is, and still steps correctly
    p = torch.nn.Parameter(torch.ones(4, dtype=torch.float64))
    storage = p.data_ptr()
    opt = momenta.SGD([p], lr=0.5)
    p.grad = torch.ones(4, dtype=torch.float64)
    opt.step()
    assert p.data_ptr() == storage
    torch.testing.assert_close(p.detach(), torch.full((4,), 0.5, dtype=torch.float64))


def test_copy_all_copies_with_and_without_foreach(monkeypatch):
    sources = [torch.randn(3), torch.randn(2, 2)]
    for foreach in (True, False):
        if not foreach:
            monkeypatch.delattr(torch, "_foreach_copy_")
        targets = [torch.zeros(3), torch.zeros(2, 2)]
        compat.copy_all(targets, sources)
        for t, s in zip(targets, sources):
            assert torch.equal(t, s)
    compat.copy_all([], [])


def test_zero_all_zeroes_with_and_without_foreach(monkeypatch):
    for foreach in (True, False):
        if not foreach:
            monkeypatch.delattr(torch, "_foreach_zero_")
        tensors = [torch.ones(3), torch.ones(2, 2, dtype=torch.float64)]
        compat.zero_all(tensors)
        assert all(not t.any() for t in tensors)


def test_profiling_sees_both_profilers_and_fails_safe(monkeypatch):
    assert not compat.profiling()
    with torch.autograd.profiler.profile():
        assert compat.profiling()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]):
        assert compat.profiling()
    assert not compat.profiling()
    monkeypatch.delattr(torch._C._autograd, "_profiler_enabled")
    assert compat.profiling()  # cannot tell: the range is recorded, as torch records it


def test_hooked_step_falls_back_to_torchs_wrapper(monkeypatch):
    import torch.optim.optimizer as torch_optimizer

    def step(self):
        return "stepped"

    monkeypatch.delattr(torch_optimizer, "_global_optimizer_pre_hooks")
    wrapped = compat.hooked_step(step)
    assert wrapped.hooked and wrapped.__wrapped__ is step
    assert "profile_hook_step" in wrapped.__code__.co_qualname  # torch's own
    monkeypatch.undo()
    ours = compat.hooked_step(step)
    assert ours.hooked and "profile_hook_step" not in ours.__code__.co_qualname


def test_fused_devices_lists_cpu_and_falls_back(monkeypatch):
    assert "cpu" in compat.fused_devices()
    import torch.utils._foreach_utils as utils

    monkeypatch.delattr(utils, "_get_fused_kernels_supported_devices")
    assert compat.fused_devices() == ["cuda", "cpu"]


def test_version_changes_in_place_and_none_forces_a_rebuild(monkeypatch):
    t = torch.zeros(2)
    before = compat.version(t)
    t.add_(1)
    assert compat.version(t) != before
    # without version counters the rules are rebuilt at every step: a tensor beta edited in
    # place still takes effect
    monkeypatch.setattr(compat, "version", lambda t: None)
    results = []
    for cls in (torch.optim.Adam, momenta.Adam):
        p = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
        beta1 = torch.tensor(0.9, dtype=torch.float64)
        opt = cls([p], lr=0.1, betas=(beta1, torch.tensor(0.999, dtype=torch.float64)))
        for step in range(3):
            if step == 1:
                beta1.fill_(0.5)
            p.grad = torch.full((3,), 1.0 + step, dtype=torch.float64)
            opt.step()
        results.append(p.detach().clone())
    torch.testing.assert_close(results[1], results[0], rtol=1e-12, atol=0)


def _kernel(p, g, s, m):
    m.copy_(0.9 * m + 0.1 * g)
    p.copy_(p - s[0] * m)


def test_compile_graph_runs_the_generated_code_and_equals_the_wrapped_call():
    examples = [torch.empty(4096), torch.empty(4096), torch.tensor([0.5]), torch.empty(4096)]
    compiled = compat.compile_graph(_kernel, examples)
    assert compiled is not None
    gen = torch.Generator().manual_seed(0)
    for n in (16, 1000, 5000):  # sizes other than the examples'
        p, g, m = (torch.randn(n, generator=gen) for _ in range(3))
        expected = [p.clone(), m.clone()]
        for _ in range(3):  # the first call goes through the wrappers, later ones not
            compiled(p, g, examples[2], m)
        with torch.autograd.profiler.profile():  # recorded: through the wrappers again
            compiled(p, g, examples[2], m)
        for _ in range(4):
            _kernel(expected[0], g, examples[2], expected[1])
        torch.testing.assert_close(p, expected[0], rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(m, expected[1], rtol=1e-6, atol=1e-6)


def test_unexpected_wrappers_fall_back_to_the_wrapped_call():
    def wrapped(*tensors):
        return None

    assert compat._innermost(wrapped) is None  # no generated code found underneath

    class Layer:
        current_callable = staticmethod(lambda args: None)
        fx_kwargs = {"is_inference": False}  # a training graph: never called directly
        inputs_to_check: list[int] = []

    def outer(*tensors):
        return None

    outer.__wrapped__ = Layer()
    assert compat._innermost(outer) is None


def _native():
    found = compat.native(wait=True)
    if found is None:
        pytest.skip("the C++ functions cannot be built here (no compiler)")
    return found


def _bucket(shapes, dtype=torch.float32):
    """Parameters of ``shapes`` in one flat buffer, and their regions of a gradient buffer."""
    params = [torch.nn.Parameter(torch.randn(s, dtype=dtype)) for s in shapes]
    flat = torch.zeros(sum(torch.Size(s).numel() for s in shapes) + 16, dtype=dtype)
    regions, start = [], 0
    for shape in shapes:
        n = torch.Size(shape).numel()
        regions.append(flat[start : start + n].view(shape))
        start += n
    return params, regions, flat


SHAPES = [(8, 8), (16,), (2, 4), (300,)]
FLAGS = bytes([0, 0, 0, 1])  # the last one large: used where it is, never copied


def test_native_gather_copies_fresh_gradients_and_sees_in_place_ones():
    native = _native()
    params, regions, flat = _bucket(SHAPES)
    grads = [torch.randn(s) for s in SHAPES]
    for p, g in zip(params, grads):
        p.grad = g
    found, used = native.gather(params, regions[:3] + [None], FLAGS)  # the large one has no region
    assert found == compat.FRESH
    for region, g, large in zip(regions, grads, FLAGS):
        assert torch.equal(region, torch.zeros_like(g) if large else g)
    assert all(p.grad is g for p, g in zip(params, grads))  # nothing re-pointed
    (view,) = used  # the large one, flat, on autograd's memory
    assert view.shape == (300,) and view.data_ptr() == grads[3].data_ptr() and torch.equal(view, grads[3])
    for p, region in zip(params[:3], regions):
        p.grad = region  # the small ones accumulate in place; the large one stays autograd's
    found, used = native.gather(params, regions[:3] + [None], FLAGS)
    assert found == compat.IN_PLACE and len(used) == 1 and used[0].data_ptr() == grads[3].data_ptr()


@pytest.mark.parametrize(
    "case", ["none", "mixed", "strides", "large-strides", "dtype", "shape", "conj", "subclass", "tuple", "length"]
)
def test_native_gather_refuses_the_unusual_and_copies_nothing(case):
    native = _native()
    shapes, dtype = (SHAPES, torch.float32) if case != "conj" else ([(4,), (3,)], torch.complex64)
    params, regions, flat = _bucket(shapes, dtype)
    flags = FLAGS if case != "conj" else bytes(2)
    for p, s in zip(params, shapes):
        p.grad = torch.randn(s, dtype=dtype)
    if case == "none":
        params[1].grad = None
    elif case == "mixed":
        params[0].grad = regions[0]
    elif case == "strides":  # same shape, transposed memory
        params[0].grad = torch.randn(8, 8).t()
    elif case == "large-strides":
        params[3].grad = torch.randn(600)[::2]
    elif case == "dtype":  # .data swaps what the grad setter would refuse
        params[1].grad.data = torch.randn(16, dtype=torch.float64)
    elif case == "shape":
        params[2].grad.data = torch.randn(4, 2)
    elif case == "conj":  # a lazy conjugate: its bytes are not its values
        params[0].grad = torch.randn(4, dtype=dtype).conj()
    elif case == "subclass":
        from torch.testing._internal.two_tensor import TwoTensor

        params[1].grad = TwoTensor(torch.randn(16), torch.randn(16))
    before = flat.clone()
    if case == "tuple":
        assert native.gather(tuple(params), regions, flags) == (0, [])
    elif case == "length":
        assert native.gather(params, regions[:2], flags) == (0, [])
    else:
        assert native.gather(params, regions, flags) == (0, [])
    assert torch.equal(flat, before)


def test_native_gather_copies_only_on_the_cpu():
    native = _native()
    params = [torch.nn.Parameter(torch.empty(4, device="meta")) for _ in range(2)]
    regions = list(torch.empty(8, device="meta").view(2, 4).unbind())
    for p in params:
        p.grad = torch.empty(4, device="meta")
    assert native.gather(params, regions, bytes(2)) == (0, [])


def test_native_holds_and_same_values():
    native = _native()
    params = [torch.nn.Parameter(torch.randn(4)) for _ in range(3)]
    ptrs = array.array("q", [p.data_ptr() for p in params])
    assert native.holds(params, ptrs)
    assert not native.holds(tuple(params), ptrs)  # type: ignore[arg-type]
    params[1].data = torch.randn(4)
    assert not native.holds(params, ptrs)
    a, b, c = torch.zeros(1), torch.zeros(1), torch.zeros(1)
    dicts = [{"step": a, "exp_avg": b}, {"step": c}]
    assert native.same_values(dicts, [a, b, c])
    assert not native.same_values(dicts, [a, b])
    assert not native.same_values(dicts, [a, c, b])
    dicts[1]["extra"] = a
    assert not native.same_values(dicts, [a, b, c])


def _train(steps=4, set_to_none=True):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 2))
    opt = momenta.AdamW(model.parameters(), lr=0.1)
    x = torch.randn(5, 8)
    for _ in range(steps):
        model(x).square().sum().backward()
        opt.step()
        opt.zero_grad(set_to_none=set_to_none)
    return [p.detach().clone() for p in model.parameters()]


def _record_answers(native, monkeypatch) -> list[int]:
    """The answers of every ``native.gather`` call from now on (FRESH, IN_PLACE or 0)."""
    answers: list[int] = []
    gather = native.gather

    def recorded(*args):
        found = gather(*args)
        answers.append(found[0])
        return found

    monkeypatch.setattr(native, "gather", recorded)
    return answers


@pytest.mark.parametrize("set_to_none", [True, False])
def test_the_fast_path_gathers_natively_with_the_python_paths_results(monkeypatch, set_to_none):
    """Where an optimizer compiles its kernels (here: any size) its gradients are gathered
    by the C++ call once it is built, with exactly the Python path's result."""
    from momenta.engine import kernels

    native = _native()
    monkeypatch.setattr(kernels.config, "compile_min_numel", 0)
    answers = _record_answers(native, monkeypatch)
    fast = _train(set_to_none=set_to_none)
    assert (compat.FRESH if set_to_none else compat.IN_PLACE) in answers
    monkeypatch.setattr(compat, "_native", False)  # as where it cannot be built
    assert compat.native() is None
    for a, b in zip(fast, _train(set_to_none=set_to_none)):
        assert torch.equal(a, b)


def test_an_optimizer_of_many_small_tensors_checks_and_copies_natively(monkeypatch):
    """Below the compile threshold, but with native_min_tensors tensors: the C++ calls."""
    from momenta.engine import kernels

    native = _native()
    assert kernels.config.compile_min_numel > 200 * 4
    params = [torch.nn.Parameter(torch.randn(4)) for _ in range(kernels.config.native_min_tensors)]
    twins = [torch.nn.Parameter(p.detach().clone()) for p in params]
    opt, twin = momenta.Adam(params, lr=0.1), torch.optim.Adam(twins, lr=0.1)
    answers = _record_answers(native, monkeypatch)
    for step in range(4):
        for p, q in zip(params, twins):
            p.grad = q.grad = torch.full((4,), float(step + 1))
        opt.step()
        twin.step()
    assert compat.FRESH in answers
    for p, q in zip(params, twins):
        torch.testing.assert_close(p, q)


def test_an_optimizer_too_small_to_compile_never_builds_the_native_functions(monkeypatch):
    monkeypatch.setattr(compat, "_native", None)
    built = []
    monkeypatch.setattr(compat, "_start_build", lambda: built.append(1) or True)
    p = torch.nn.Parameter(torch.ones(8))
    opt = momenta.AdamW([p], lr=0.1)
    for _ in range(2):
        p.grad = torch.ones(8)
        opt.step()
    assert not built


def test_a_later_process_loads_the_native_build_without_building_or_importing_inductor():
    """The first build notes where its library is; a fresh process loads it at once (no
    background build, no second-long import of torch._inductor)."""
    import subprocess
    import sys

    _native()  # built (or loaded) here: the note exists
    assert compat._index().is_file()
    code = (
        "import sys, torch\n"
        "from momenta.engine import compat\n"
        "n = compat.native()\n"
        "print(n is not None, 'torch._inductor.codecache' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True", "False"]


def test_a_stale_note_means_a_new_build_and_a_failure_is_not_retried(monkeypatch, tmp_path):
    note = tmp_path / "native.path"
    note.write_text(str(tmp_path / "gone.so"))
    monkeypatch.setattr(compat, "_index", lambda: note)
    assert compat._noted() is None
    note.write_text("failed: CalledProcessError: no compiler")
    assert compat._noted() is False  # not tried again


def test_a_build_notes_only_failures_that_would_recur(monkeypatch, tmp_path):
    note = tmp_path / "native.path"
    monkeypatch.setattr(compat, "_index", lambda: note)
    monkeypatch.setattr(compat, "_NATIVE_SOURCE", tmp_path / "gone.cpp")  # a clone deleted mid-build
    with pytest.raises(FileNotFoundError):
        compat.build_and_note()
    assert not note.exists()  # the next process tries again
    bad = tmp_path / "bad.cpp"
    bad.write_text("this is not C++\n")
    monkeypatch.setattr(compat, "_NATIVE_SOURCE", bad)
    compat.build_and_note()
    assert note.read_text().startswith("failed: CppCompileError")
    assert compat._noted() is False
