"""benchmarks/gpu_check.py on a machine without a CUDA GPU: it says there is nothing to check
and exits 0 (on a GPU machine, run the script itself: it takes minutes)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is present: run benchmarks/gpu_check.py itself")
def test_without_a_gpu_there_is_nothing_to_check():
    proc = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "no CUDA GPU present: nothing to check"
