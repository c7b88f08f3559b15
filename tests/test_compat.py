"""Every private torch API the engine uses (momenta/engine/compat.py) works on this torch, and
each fails safe when torch no longer offers it: slower, never wrong."""

from __future__ import annotations

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


def test_byte_copy_copies_alike_tensors_in_one_call_and_refuses_the_rest():
    flat = torch.zeros(64 + 16 + 8)
    shapes = [(8, 8), (16,), (2, 4)]
    targets, start = [], 0
    for shape in shapes:
        n = torch.Size(shape).numel()
        targets.append(flat[start : start + n].view(shape))
        start += n
    copy = compat.ByteCopy(targets)
    sources = [torch.randn(s) for s in shapes]
    assert copy(sources)
    for t, s in zip(targets, sources):
        assert torch.equal(t, s)
    before = flat.clone()
    transposed = [sources[0].t().contiguous().t(), *sources[1:]]  # same shape, other strides
    assert not copy(transposed)
    assert not copy([torch.randn(4, 16), *sources[1:]])  # other shape (same element count)
    assert not copy(sources[:2])
    assert torch.equal(flat, before)  # a refused call copies nothing


def test_byte_copy_falls_back_when_it_cannot_be_built(monkeypatch):
    monkeypatch.setattr(compat, "_copy_function", False)
    target = torch.zeros(4)
    assert not compat.ByteCopy([target])([torch.ones(4)])
    assert torch.equal(target, torch.zeros(4))
    # the fast path then copies with copy_all, and steps the same
    p = torch.nn.Parameter(torch.ones(4))
    q = torch.nn.Parameter(torch.ones(4))
    opt, twin = momenta.SGD([p], lr=0.5), torch.optim.SGD([q], lr=0.5)
    for _ in range(2):
        p.grad, q.grad = torch.full((4,), 2.0), torch.full((4,), 2.0)
        opt.step()
        twin.step()
    assert torch.equal(p.detach(), q.detach())


def test_the_fast_path_copies_fresh_gradients_with_byte_copy(monkeypatch):
    """Where an optimizer compiles its kernels (here: any size) its fresh small gradients
    are copied by ByteCopy, with exactly copy_all's result."""
    from momenta.engine import kernels

    monkeypatch.setattr(kernels.config, "compile_min_numel", 0)
    results: list[bool] = []
    call = compat.ByteCopy.__call__
    monkeypatch.setattr(compat.ByteCopy, "__call__", lambda self, s: results.append(call(self, s)) or results[-1])

    def train() -> list[torch.Tensor]:
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 2))
        opt = momenta.AdamW(model.parameters(), lr=0.1)
        x = torch.randn(5, 8)
        for _ in range(3):
            model(x).square().sum().backward()
            opt.step()
            opt.zero_grad()
        return [p.detach() for p in model.parameters()]

    native = train()
    assert results and all(results)
    monkeypatch.setattr(compat, "_copy_function", False)  # copy_all instead
    for a, b in zip(native, train()):
        assert torch.equal(a, b)


def test_an_optimizer_too_small_to_compile_never_builds_byte_copy(monkeypatch):
    built = []
    monkeypatch.setattr(compat, "_copy_ranges", lambda: built.append(1) or False)
    p = torch.nn.Parameter(torch.ones(8))
    opt = momenta.AdamW([p], lr=0.1)
    for _ in range(2):
        p.grad = torch.ones(8)
        opt.step()
    assert not built
