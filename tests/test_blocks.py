"""Block kernels of 8-bit coded state (``momenta.engine.blocks``): the same bits as Inductor's
kernel for every elementwise optimizer, partial blocks, what they cover, and the C++ made of
a rule's ops."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import momenta
from momenta.engine import blocks, kernels
from test_state_precision import ELEMENTWISE, _make

pytestmark = pytest.mark.skipif(not kernels.config.compile, reason="compiled kernels are off")


def _train(name: str, shapes: list[tuple[int, ...]], steps: int = 4, **kw: Any) -> tuple[list[torch.Tensor], dict[str, Any]]:
    g = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(s, generator=g)) for s in shapes]
    opt = _make(name, params, state_precision="int8", **kw)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=g) + 0.2
        opt.step()
    return [p.detach().clone() for p in params], opt.state_dict()


def _both(monkeypatch: pytest.MonkeyPatch, run: Any) -> tuple[Any, Any, list[Any]]:
    """``run()`` with block kernels, then with Inductor's; and the block kernels called."""
    monkeypatch.setattr(kernels.config, "compile_min_numel", 1024)
    called: list[Any] = []
    original = blocks.BlockKernel.__call__

    def spy(self: blocks.BlockKernel, *args: Any) -> None:
        called.append(self)
        original(self, *args)

    monkeypatch.setattr(blocks.BlockKernel, "__call__", spy)
    monkeypatch.setattr(kernels.config, "blocks", True)
    with_blocks = run()
    monkeypatch.setattr(kernels.config, "blocks", False)
    n = len(called)
    inductor = run()
    assert len(called) == n  # (off means off)
    return with_blocks, inductor, called


def _equal(a: tuple[list[torch.Tensor], dict[str, Any]], b: tuple[list[torch.Tensor], dict[str, Any]]) -> None:
    for x, y in zip(a[0], b[0]):
        assert torch.equal(x, y)
    for i, entry in a[1]["state"].items():
        for k, v in entry.items():
            assert torch.equal(v, b[1]["state"][i][k]), (i, k)


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_block_kernels_step_as_inductors_kernel_to_the_bit(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every elementwise optimizer with int8 state: parameters, codes and scales after four
    steps are those of Inductor's kernel, bit for bit (a parameter of whole blocks, one with
    a partial last block, one too small to code)."""
    shapes = [(64, 80), (64, 81), (16, 8)]
    with_blocks, inductor, called = _both(monkeypatch, lambda: _train(name, shapes))
    _equal(with_blocks, inductor)
    if name in ("AdamW", "Adam", "Lion", "SGD", "Adagrad", "RMSprop", "seed.Adam"):
        assert called  # these rules' ops all have C++


def test_a_fresh_gradient_of_whole_blocks_is_used_where_autograd_put_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Large parameters that fill whole blocks keep their gradients where they are (no copy
    into the flat buffer); the results are the same either way."""
    monkeypatch.setattr(kernels.config, "compile_min_numel", 1024)
    monkeypatch.setattr(kernels.config, "direct_min_numel", 4096)
    runs = []
    for direct in (4096, 10**9):
        monkeypatch.setattr(kernels.config, "direct_min_numel", direct)
        runs.append(_train("AdamW", [(64, 128), (64, 80), (16, 8)]))
    _equal(*runs)


def test_what_block_kernels_cover() -> None:
    """int8 buffers only (a bf16 or int4 one, or float32 weights rounded otherwise, take
    Inductor's kernel)."""
    p = torch.nn.Parameter(torch.randn(64, 128))

    def covered(**kw: Any) -> bool:
        opt = momenta.AdamW([p], **kw)
        group = opt.param_groups[0]
        rules, _ = opt._rules_of(0, group)
        kept = momenta.engine.storage.Storage.of(group, rules, p)
        assert kept is not None
        buffers = {k: torch.empty(0) for s in kept.stored for k in s.keys()}
        return blocks.supported(kept, p.detach().view(-1, 256), buffers)

    assert covered(state_precision="int8")
    assert covered(state_precision={"exp_avg": "int8", "exp_avg_sq": "int8"})
    assert not covered(state_precision="int4")
    assert not covered(state_precision={"exp_avg": "int8", "exp_avg_sq": "bf16"})


def test_an_op_without_cpp_falls_back() -> None:
    """A traced op this module has no C++ for is refused by name (the caller then compiles
    with Inductor)."""
    graph = torch.fx.symbolic_trace(lambda p, g, k: torch.ops.aten.exp.default(p)).graph
    with pytest.raises(blocks.Unsupported, match="exp"):
        blocks._statements(graph, ["p_", "g_", "K"])
