"""Fixtures the suites share: pytest finds them here, no test module imports them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from helpers import CompiledKernels, record_graph_builds, record_kernel_runs

from momenta.engine import kernels


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One intra-op thread for every test: the suites' tensors are tiny, and pytest-xdist's
    workers would otherwise oversubscribe the cores; bfloat16 matrix products (Muon's
    Newton–Schulz) then wait on each other, ten times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def compiled_kernels(monkeypatch) -> CompiledKernels:
    """Compiled kernels for every optimizer, however small (the configuration is restored
    afterwards), and a record of them: each kernel call's result (``False``: it could not
    run, and that slice ran eagerly) and each graph compiled."""
    monkeypatch.setattr(kernels.config, "compile_min_numel", 0)
    monkeypatch.setattr(kernels.config, "compile", True)
    monkeypatch.setenv("TORCHINDUCTOR_COMPILE_THREADS", "1")
    return CompiledKernels(record_kernel_runs(monkeypatch), record_graph_builds(monkeypatch))
