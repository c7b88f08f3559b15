"""The launcher fails loudly instead of hanging: a failing rank ends the run with its
traceback, and a run that outlives its timeout is killed with everything it started."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch.distributed as dist

from . import launch
from .common import Context

pytestmark = launch.POSIX_ONLY


def fail_on_rank_0(ctx: Context) -> dict:
    if ctx.rank == 0:
        raise ValueError("rank 0 fails on purpose")
    dist.barrier()  # waits for rank 0, which never comes
    return {}


def hang(ctx: Context) -> dict:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    (ctx.tmp / f"child{ctx.rank}").write_text(str(child.pid))
    time.sleep(600)
    return {}


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return True
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False
    return state in ("Z", "X")  # dead, waiting to be reaped by init


def test_a_failing_rank_fails_the_run_with_its_traceback(tmp_path):
    start = time.monotonic()
    with pytest.raises(pytest.fail.Exception) as failure:
        launch.run(f"{launch.PACKAGE}.test_launch:fail_on_rank_0", tmp_path, timeout=60)
    message = str(failure.value)
    assert "ValueError: rank 0 fails on purpose" in message
    assert "rank 0: exit status 1" in message
    # rank 1 waits in a barrier: gloo notices the lost peer, or the grace period ends it
    assert "rank 1: killed" in message or "rank 1: exit status 1" in message
    assert time.monotonic() - start < 30


def test_a_hanging_run_is_killed_at_its_timeout(tmp_path):
    start = time.monotonic()
    # long enough for both ranks to start (import torch, join the group) on a busy machine;
    # the ranks sleep meanwhile, so this costs time, not CPU
    with pytest.raises(pytest.fail.Exception, match="timed out after 15 s"):
        launch.run(f"{launch.PACKAGE}.test_launch:hang", tmp_path, timeout=15)
    assert time.monotonic() - start < 30
    children = [int(p.read_text()) for p in (tmp_path / "ranks").glob("child*")]
    assert len(children) == 2, "the ranks did not start their children before the timeout"
    deadline = time.monotonic() + 5
    while not all(_gone(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(_gone(pid) for pid in children), "a rank's own child process survived"
