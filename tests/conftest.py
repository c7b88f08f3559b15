"""Fixtures the suites share: pytest finds them here, no test module imports them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One intra-op thread for every test: the suites' tensors are tiny, and pytest-xdist's
    workers would otherwise oversubscribe the cores; bfloat16 matrix products (Muon's
    Newton–Schulz) then wait on each other, ten times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
