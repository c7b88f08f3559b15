"""Start the ranks of a distributed test and collect what they report (test side).

:func:`run` starts ``world_size`` fresh Python processes (:mod:`.worker`), each in its own
session so that a timeout can kill it with everything it started, and waits for all of
them, with a hard ``timeout``. If a rank fails, the others are stopped after a short grace
period (they would otherwise wait in a collective), and the test fails with every rank's
exit status and the end of its output. Nothing here can hang.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist

import momenta

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: the tests are skipped (POSIX_ONLY)
    fcntl = None  # type: ignore[assignment]

WORKER = Path(__file__).resolve().parent / "worker.py"
PACKAGE = "distributed"  # this package, as the ranks import it (tests/ first on their path)
SOURCE = Path(momenta.__file__).resolve().parent.parent  # the ranks import this momenta
GRACE = 3.0  # seconds the other ranks get to fail on their own once one rank has failed
LOG_TAIL = 60  # lines of each rank's output shown when a run fails


def _gpus() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


#: The backends a test runs on: gloo on CPU always; NCCL on CUDA where two GPUs exist.
BACKENDS = [
    pytest.param("gloo", id="gloo-cpu"),
    pytest.param(
        "nccl",
        id="nccl-cuda",
        marks=pytest.mark.skipif(
            not (dist.is_nccl_available() and _gpus() >= 2), reason="needs NCCL and 2 GPUs"
        ),
    ),
]

#: Every distributed test module's ``pytestmark``: the launcher kills POSIX sessions.
POSIX_ONLY = pytest.mark.skipif(os.name != "posix", reason="the launcher needs POSIX sessions")


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """Kill a rank's whole session (the rank and anything it started, e.g. compile workers)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:  # pragma: no cover - a zombie we cannot reap
        pass


def _tail(path: Path, lines: int = LOG_TAIL) -> str:
    if not path.exists():
        return "(no output)"
    text = path.read_text(errors="replace").rstrip().splitlines()
    cut = f"[... {len(text) - lines} lines cut ...]\n" if len(text) > lines else ""
    return cut + "\n".join(text[-lines:])


def run(
    scenarios: str | list[str],
    tmp_path: Path,
    *,
    backend: str = "gloo",
    world_size: int = 2,
    timeout: float = 60.0,
    **kwargs: Any,
) -> list[Any]:
    """Run the scenarios (``"module:function"``, one after the other in the same process
    group, with ``kwargs``) on ``world_size`` ranks; return each rank's result (of a single
    scenario, or by scenario for a list). Fails the test if a rank fails or the run exceeds
    ``timeout`` seconds."""
    names = [scenarios] if isinstance(scenarios, str) else list(scenarios)
    tmp = tmp_path / "ranks"
    tmp.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS="1",  # one thread per rank
        MKL_NUM_THREADS="1",
        TORCHINDUCTOR_COMPILE_THREADS="1",  # no compile worker pool (leaked semaphores)
        PYTHONUNBUFFERED="1",
        PYTHONPATH=os.pathsep.join(p for p in (str(SOURCE), env.get("PYTHONPATH")) if p),
    )
    spec = dict(
        scenarios=names, world_size=world_size, backend=backend, tmp=str(tmp),
        collective_timeout=max(10.0, 0.75 * timeout), kwargs=kwargs,
    )  # fmt: skip
    # The ranks' rendezvous, held here so that it outlives them all (a store hosted by
    # rank 0 disappears when rank 0 exits, and a rank still shutting down can then abort).
    store = dist.TCPStore(
        "127.0.0.1", 0, world_size, is_master=True, wait_for_workers=False,
        timeout=timedelta(seconds=timeout),
    )  # fmt: skip
    spec["port"] = store.port
    procs: list[subprocess.Popen[bytes]] = []
    logs = [tmp / f"rank{rank}.log" for rank in range(world_size)]
    start = time.monotonic()
    timed_out = False
    try:
        for rank, log in enumerate(logs):
            argv = [sys.executable, str(WORKER), json.dumps({**spec, "rank": rank})]
            with open(log, "wb") as out:
                proc = subprocess.Popen(
                    argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp,
                    start_new_session=True,
                )  # fmt: skip
            procs.append(proc)
        first_failure = None
        while True:
            codes = [p.poll() for p in procs]
            if all(code is not None for code in codes):
                break
            if first_failure is None and any(code not in (None, 0) for code in codes):
                first_failure = time.monotonic()
            if first_failure is not None and time.monotonic() - first_failure > GRACE:
                break
            if time.monotonic() - start > timeout:
                timed_out = True
                break
            time.sleep(0.05)
    finally:
        for proc in procs:
            _kill(proc)
        del store
    codes = [p.returncode for p in procs]
    if timed_out or any(code != 0 for code in codes):
        what = f"timed out after {timeout:.0f} s" if timed_out else "failed"
        report = [f"distributed scenarios {names} ({backend}, {world_size} ranks) {what}"]
        for rank, (code, log) in enumerate(zip(codes, logs, strict=True)):
            status = "killed" if code is not None and code < 0 else f"exit status {code}"
            report.append(f"----- rank {rank}: {status} -----\n{_tail(log)}")
        pytest.fail("\n".join(report), pytrace=False)
    results = [json.loads((tmp / f"rank{rank}.json").read_text()) for rank in range(world_size)]
    return [r[scenarios] for r in results] if isinstance(scenarios, str) else results


#: The scenarios that share one process group (and one start-up) per backend.
SUITE = [
    f"{PACKAGE}.test_ddp:scenario",
    f"{PACKAGE}.test_fsdp:scenario",
    f"{PACKAGE}.test_zero:scenario",
    f"{PACKAGE}.test_checkpoint:scenario",
]


def shared_run(tmp_path_factory: pytest.TempPathFactory, key: str, scenarios: list[str],
               **options: Any) -> dict[str, Any]:  # fmt: skip
    """:func:`run`, once per test session even under pytest-xdist: the first test that asks
    for ``key`` runs it (holding a file lock), the others, in any worker, read its result.
    So each case can be its own test (and carry its own marks) at the cost of one run.
    Returns each scenario's per-rank results."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):  # the workers' directories share a parent
        base = base.parent / f"distributed-{os.environ.get('PYTEST_XDIST_TESTRUNUID', '')}"
    base.mkdir(parents=True, exist_ok=True)
    result = base / f"{key}.json"
    with open(base / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, even on a crash
        if not result.exists():
            try:
                by_rank = run(scenarios, base / key, **options)
                outcome = {"results": {s: [r[s] for r in by_rank] for s in scenarios}}
            except pytest.fail.Exception as e:
                outcome = {"error": str(e.msg)}
            result.write_text(json.dumps(outcome))
        outcome = json.loads(result.read_text())
    if "error" in outcome:
        pytest.fail(outcome["error"], pytrace=False)
    return outcome["results"]


def suite_results(tmp_path_factory: pytest.TempPathFactory, module: str, backend: str,
                  ) -> list[Any]:  # fmt: skip
    """The per-rank results of test module ``module``'s scenario (in :data:`SUITE`)."""
    scenario = f"{PACKAGE}.{module}:scenario"
    assert scenario in SUITE, scenario
    return shared_run(tmp_path_factory, f"suite-{backend}", SUITE, backend=backend,
                      timeout=240)[scenario]  # fmt: skip


def assert_case(results: list[dict[str, list[str]]], name: str, shown: int = 30) -> None:
    """Every rank reported case ``name``, without a mismatch."""
    lines = []
    for rank, result in enumerate(results):
        if name not in result:
            lines.append(f"rank {rank}: no result")
        lines += [f"rank {rank}: {m}" for m in result.get(name, [])]
    more = [f"... and {len(lines) - shown} more"] if len(lines) > shown else []
    assert not lines, f"{name}: {len(lines)} mismatches\n" + "\n".join(lines[:shown] + more)
