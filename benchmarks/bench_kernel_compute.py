"""What an AdamW update costs in arithmetic alone: the tensors fit in the caches, one thread.

    python benchmarks/bench_kernel_compute.py [--log2-numel 17] [--calls 400]

At the memory roofline a step's arithmetic hides behind its memory traffic; when memory is fast
(this machine's stream bandwidth ranges 46–88 GB/s from run to run) it does not. This times
the update on cache-resident tensors, so that arithmetic is all there is:

* ``numbers in the kernel``: the update as momenta's compiled kernels compute it, the step's
  numbers read from a packed float32 tensor and ``√c₂`` taken inside the kernel (Inductor
  generates it in every vector iteration of the loop: the C++ compiler cannot hoist it, the
  output pointers may alias the packed input);
* ``numbers from the host``: the same update with ``1 − β``, ``√c₂`` computed beforehand;
* torch's fused AdamW kernel (``torch._fused_adamw_``).

Each variant's call overhead (timed on 1024 elements: dynamo's guards for the compiled ones,
the dispatcher for torch's) is not arithmetic and is taken off.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

# β₁, β₂, shrink, step size, c₂, ε; and computed on the host: 1−β₁, 1−β₂, √c₂
NUMBERS = [0.9, 0.999, 1 - 1e-5, 1e-2, 0.002, 1e-8, 1 - 0.9, 1 - 0.999, 0.002**0.5]


def in_kernel(p: Tensor, g: Tensor, m: Tensor, v: Tensor, k: Tensor) -> None:
    m.mul_(k[0]).add_(g * (1 - k[0]))
    v.mul_(k[1]).add_(g * g * (1 - k[1]))
    p.mul_(k[2]).sub_(k[3] * m / (v.sqrt() / k[4].sqrt() + k[5]))


def from_host(p: Tensor, g: Tensor, m: Tensor, v: Tensor, k: Tensor) -> None:
    m.mul_(k[0]).add_(g * k[6])
    v.mul_(k[1]).add_(g * g * k[7])
    p.mul_(k[2]).sub_(k[3] * m / (v.sqrt() / k[8] + k[5]))


def best_us(fn: Callable[[], None], calls: int, rounds: int = 5) -> float:
    """The fastest of ``rounds`` mean times of ``calls`` calls, µs."""
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - start) / calls)
    return best * 1e6


def measure(numel: int, calls: int) -> dict[str, tuple[float, float]]:
    """(µs a call, of which call overhead) for each variant on ``numel`` elements."""
    out: dict[str, tuple[float, float]] = {}
    for name, fn in (("numbers in the kernel", in_kernel), ("numbers from the host", from_host)):
        compiled = torch.compile(fn, fullgraph=True, dynamic=False)
        times = []
        for n in (numel, 1024):
            p, g, m, v = (torch.randn(n) for _ in range(4))
            v.abs_()
            k = torch.tensor(NUMBERS)
            for _ in range(20):
                compiled(p, g, m, v, k)
            times.append(best_us(lambda: compiled(p, g, m, v, k), calls if n == numel else 5000))
        out[name] = (times[0], times[1])
    times = []
    for n in (numel, 1024):
        p, g, m, v = (torch.randn(n) for _ in range(4))
        v.abs_()
        step = [torch.tensor(5.0)]

        def fused() -> None:
            torch._fused_adamw_([p], [g], [m], [v], [], step, lr=1e-3, beta1=0.9, beta2=0.999, weight_decay=1e-2,
                                eps=1e-8, amsgrad=False, maximize=False)  # fmt: skip

        times.append(best_us(fused, calls if n == numel else 5000))
    out["torch fused"] = (times[0], times[1])
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log2-numel", type=int, default=17, help="elements of each tensor, log2 (default 17: 0.5 MiB)")
    parser.add_argument("--calls", type=int, default=400)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    numel = 1 << args.log2_numel
    rows = measure(numel, args.calls)
    print(f"torch {torch.__version__}, 1 thread; AdamW update of {numel} elements, cache-resident\n")
    print("| variant | µs a call | call overhead | arithmetic, ns an element |")
    print("|---|---|---|---|")
    for name, (total, overhead) in rows.items():
        print(f"| {name} | {total:.1f} | {overhead:.1f} | {(total - overhead) * 1e3 / numel:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
