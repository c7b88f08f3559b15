"""Block kernels of coded state (``momenta.engine.blocks``): the same bits as Inductor's
kernel for every elementwise optimizer, partial blocks, what they cover, the C++ codecs and
random bits against torch's, and the C++ made of a rule's ops."""

from __future__ import annotations

from typing import Any

import ctypes
import subprocess
from pathlib import Path

import pytest
import torch

import momenta
from momenta.engine import blocks, kernels
from momenta.precision import codecs
from momenta.precision.rounding import random_halves, step_key
from test_state_precision import ELEMENTWISE, _make

pytestmark = pytest.mark.skipif(not kernels.config.compile, reason="compiled kernels are off")


def _train(name: str, shapes: list[tuple[int, ...]], steps: int = 4, **kw: Any) -> tuple[list[torch.Tensor], dict[str, Any]]:
    torch.manual_seed(0)  # the optimizer's seed of its random bits (int4 codes round stochastically)
    g = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(s, generator=g)) for s in shapes]
    kw.setdefault("state_precision", "int8")
    opt = _make(name, params, **kw)
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


@pytest.mark.parametrize("name", ["AdamW", "Lion", "SGD", "Adagrad", "AdEMAMix", "seed.RMSProp"])
def test_bf16_kernels_step_as_inductors_kernel_to_the_bit(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """bf16 state (every write rounded stochastically): the same bits as Inductor's kernel."""
    shapes = [(64, 80), (64, 81), (16, 8)]
    with_blocks, inductor, called = _both(monkeypatch, lambda: _train(name, shapes, state_precision="bf16"))
    _equal(with_blocks, inductor)
    assert called


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
    """Every buffer int8, or every one int4, or every one bf16 (a mix, or two block sizes,
    take Inductor's kernel)."""
    p = torch.nn.Parameter(torch.randn(64, 128))

    def covered(**kw: Any) -> bool:
        opt = momenta.AdamW([p], **kw)
        group = opt.param_groups[0]
        rules, _ = opt._rules_of(0, group)
        kept = momenta.engine.storage.Storage.of(group, rules, p)
        assert kept is not None
        buffers = {k: torch.empty(0, dtype=torch.bfloat16 if s.precision == "bf16" else torch.uint8) for s in kept.stored for k in s.keys()}
        return blocks.supported(kept, p.detach().view(-1, 256), buffers)

    assert covered(state_precision="int8")
    assert covered(state_precision="int4")
    assert covered(state_precision={"exp_avg": "int8", "exp_avg_sq": "int8"})
    assert not covered(state_precision={"exp_avg": "int8", "exp_avg_sq": "int4"})  # two block sizes
    assert not covered(state_precision={"exp_avg": "int8", "exp_avg_sq": "bf16"})
    assert covered(state_precision="bf16")


def test_an_op_without_cpp_falls_back() -> None:
    """A traced op this module has no C++ for is refused by name (the caller then compiles
    with Inductor)."""
    graph = torch.fx.symbolic_trace(lambda p, g, k: torch.ops.aten.exp.default(p)).graph
    with pytest.raises(blocks.Unsupported, match="exp"):
        blocks._statements(graph, ["p_", "g_", "K"])


_CODECS = r"""
extern "C" void encode(const float* x, const float* noise, int* q, int n, float inv, int kind) {
  for (int i = 0; i < n; ++i)
    q[i] = kind == 0 ? encode_s8(x[i], inv, 0.f) : kind == 1 ? encode_u8(x[i], inv, 0.f)
         : kind == 2 ? encode_s4(x[i], inv, noise[i]) : encode_u4(x[i], inv, noise[i]);
}
extern "C" void decode(const int* q, float* y, int n, float d, int kind) {
  for (int i = 0; i < n; ++i)
    y[i] = kind == 0 ? decode_s8(q[i], d) : kind == 1 ? decode_u8(q[i], d) : kind == 2 ? decode_s4(q[i], d) : decode_u4(q[i], d);
}
extern "C" void noise(int64_t key, int64_t offset, int stream, int n, float* out) {
  const uint32_t k = stream_key(key, offset, (stream + 1) / 2), low = (uint32_t)offset;
  for (int i = 0; i < n; ++i) {
    const uint32_t h = mix32((uint32_t)(i + low) ^ k);
    out[i] = (float)(int)(stream % 2 == 1 ? (h >> 16) : (h & 0xFFFFu)) * 1.52587890625e-05f;
  }
}
"""


@pytest.fixture(scope="module")
def cpp(tmp_path_factory: pytest.TempPathFactory) -> ctypes.CDLL:
    from torch._inductor.cpp_builder import get_cpp_compiler

    where: Path = tmp_path_factory.mktemp("codecs")
    (where / "codecs.cpp").write_text(blocks._PRELUDE + _CODECS)
    try:
        subprocess.run([get_cpp_compiler(), *blocks._FLAGS, str(where / "codecs.cpp"), "-o", str(where / "codecs.so")], check=True)
    except (OSError, subprocess.CalledProcessError) as error:
        pytest.skip(f"no C++ compiler here: {error}")
    return ctypes.CDLL(str(where / "codecs.so"))


def _ptr(t: torch.Tensor) -> ctypes.c_void_p:
    return ctypes.c_void_p(t.data_ptr())


@pytest.mark.parametrize("kind", range(4))
def test_the_cpp_codecs_code_as_torchs(cpp: ctypes.CDLL, kind: int) -> None:
    """Every code decodes to torch's value, and values (zeros, NaN, ±inf, tiny and huge ones,
    both signs) encode to torch's codes, with the same noise (int4 rounds stochastically)."""
    codec = [*codecs.PRECISIONS["int8"], *codecs.PRECISIONS["int4"]][kind]
    fmt, n = codec.format, 4096
    g = torch.Generator().manual_seed(kind)
    x = torch.randn(n, generator=g) * 3
    x[:9] = torch.tensor([0.0, -0.0, float("nan"), float("inf"), -float("inf"), 1e-30, -1e-30, 1e6, -1e6])
    noise = torch.rand(n, generator=g)
    inv = 0.7
    a = x.abs() if fmt.signed else torch.where(x < 0, 0.0, x)
    r = codec.root(a)
    q = fmt.code(r * inv, noise if codec.format.bits == 4 else None)
    if fmt.signed:
        q = torch.where((x < 0) & (q > 0), q | (1 << (fmt.bits - 1)), q)
        q = torch.where(x != x, 1 << (fmt.bits - 1), q)
    else:
        q = torch.where(r > 0, q.clamp(min=1), q)
    got = torch.empty(n, dtype=torch.int32)
    cpp.encode(_ptr(x), _ptr(noise), _ptr(got), n, ctypes.c_float(inv), kind)
    assert torch.equal(got, q.to(torch.int32))
    codes = torch.arange(1 << fmt.bits, dtype=torch.int32)
    mag = codes & ((1 << (fmt.bits - 1)) - 1) if fmt.signed else codes
    want = fmt.value(mag) * 0.37
    for _ in range(fmt.power.bit_length() - 1):
        want = want * want
    if fmt.signed:
        want = torch.where(codes >= (1 << (fmt.bits - 1)), -want, want)
        want = torch.where(codes == (1 << (fmt.bits - 1)), float("nan"), want)
    values = torch.empty(len(codes))
    cpp.decode(_ptr(codes), _ptr(values), len(codes), ctypes.c_float(0.37), kind)
    assert torch.equal(values.nan_to_num(7.0), want.nan_to_num(7.0))


def test_the_cpp_random_bits_are_rounding_s(cpp: ctypes.CDLL) -> None:
    """Each element's noise is ``precision.rounding.random_halves``', for the streams that
    share a hash and for an offset past 2³² (a later parameter's)."""
    key, offset, n = step_key(7, 3), (5 << 32) + 123, 4096
    for stream in (1, 2, 3):
        want = random_halves(key, n, offset, stream).to(torch.float32) * 2.0**-16
        got = torch.empty(n)
        cpp.noise(ctypes.c_int64(int(key)), ctypes.c_int64(offset), stream, n, _ptr(got))
        assert torch.equal(got, want)


def test_int4_block_kernels_step_as_inductors_kernel_to_the_bit(monkeypatch: pytest.MonkeyPatch) -> None:
    """int4 (stochastic codes, blocks of 128, two codes a byte) for AdamW: the same bits as
    Inductor's kernel (which takes minutes to compile for int4: one optimizer here)."""
    shapes = [(64, 80), (64, 81), (16, 8)]
    with_blocks, inductor, called = _both(monkeypatch, lambda: _train("AdamW", shapes, state_precision="int4"))
    _equal(with_blocks, inductor)
    assert called
