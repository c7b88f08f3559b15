"""Wall time of the default ``momenta compare`` run (iris, 500 epochs, the seed's five).

    python benchmarks/bench_compare.py [--rounds 3] [--epochs 500] [--cli]

Prints, per round and as the median over rounds: the training time of each optimizer
(µs per step), the whole ``compare()`` call (training, evaluation, plots, CSV, JSON, HTML),
and with ``--cli`` the command ``python -m momenta.cli compare`` as a new process (imports
included): what a user waits for. Not a test: it asserts nothing, it measures.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from momenta.compare import compare  # noqa: E402


def bench_api(epochs: int, out: Path) -> tuple[float, dict[str, tuple[float, float]]]:
    """(seconds for compare(), {optimizer: (training seconds, µs per step)})."""
    start = time.perf_counter()
    result = compare(epochs=epochs, out=out)
    total = time.perf_counter() - start
    per_optimizer = {
        name: (r.runs[0].total_time_s, (r.runs[0].time_per_step_s or 0.0) * 1e6)
        for name, r in result.results.items()
    }
    return total, per_optimizer


def bench_cli(epochs: int, out: Path) -> float:
    """Seconds for ``python -m momenta.cli compare`` in a fresh process."""
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "momenta.cli", "compare", "--epochs", str(epochs), "--quiet",
         "--out", str(out)],
        check=True, cwd=REPO, stdout=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=500)
    parser.add_argument("--cli", action="store_true", help="also time the command line")
    args = parser.parse_args()

    totals, clis = [], []
    training: dict[str, list[float]] = {}
    per_step: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        compare(["sgd"], epochs=1)  # warm-up: imports, first-call allocations
        for k in range(args.rounds):
            total, per_optimizer = bench_api(args.epochs, Path(tmp) / f"api-{k}")
            totals.append(total)
            for name, (seconds, us) in per_optimizer.items():
                training.setdefault(name, []).append(seconds)
                per_step.setdefault(name, []).append(us)
            line = f"round {k + 1}: compare() {total:.2f} s"
            if args.cli:
                clis.append(bench_cli(args.epochs, Path(tmp) / f"cli-{k}"))
                line += f", CLI process {clis[-1]:.2f} s"
            print(line, flush=True)

    print(f"\nmedian of {args.rounds} rounds, {args.epochs} epochs, {os.cpu_count()} cores")
    print(f"{'optimizer':<10} {'training s':>10} {'µs/step':>8}")
    for name in training:
        print(f"{name:<10} {statistics.median(training[name]):>10.3f} "
              f"{statistics.median(per_step[name]):>8.0f}")
    print(f"compare() total (training + evaluation + files): {statistics.median(totals):.2f} s")
    if clis:
        print(f"momenta compare as a new process (imports included): "
              f"{statistics.median(clis):.2f} s")


if __name__ == "__main__":
    main()
