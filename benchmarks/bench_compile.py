"""Compile latency: how long the first step of a momenta optimizer takes in a fresh process,
with a cold and with a warm on-disk compile cache, against its later steps.

    python benchmarks/bench_compile.py [--models gpt-2x64,gpt-6x384] [--optimizers AdamW,Adam]

Each measurement is its own process (what a user's script is): build the model, one real
training iteration (forward, backward, clip, step, zero_grad), timing ``import torch``,
``import momenta``, the first ``step()`` and the median of ten later ones. "cold" runs
with an empty Inductor cache directory (``TORCHINDUCTOR_CACHE_DIR``), "warm" reruns the
same process with the cache the cold run left. AdamW with nanoGPT's two param groups has
two rule structures (with and without weight decay): its first step compiles two kernels.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

WORKER = r"""
import json, statistics, sys, time
start = time.perf_counter()
import torch
torch_s = time.perf_counter() - start
import momenta
from momenta.bench.models import PRESETS, param_groups
momenta_s = time.perf_counter() - start - torch_s
preset, name = PRESETS[sys.argv[1]], sys.argv[2]
torch.manual_seed(0)
model = preset.build()
opt = getattr(momenta, name)(param_groups(model), lr=1e-3)
gen = torch.Generator().manual_seed(0)
times = []
for _ in range(11):
    x, y = preset.batch(model, gen)
    model(x, y).backward()  # the presets' models return their loss
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    t = time.perf_counter()
    opt.step()
    times.append(time.perf_counter() - t)
    opt.zero_grad()
print(json.dumps(dict(torch=torch_s, momenta=momenta_s, first=times[0], later=statistics.median(times[1:]))))
"""


def measure(model: str, optimizer: str, cache: str) -> dict[str, float]:
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
    done = subprocess.run(
        [sys.executable, "-c", WORKER, model, optimizer], env=env, capture_output=True, text=True, timeout=900
    )
    if done.returncode != 0:
        raise RuntimeError(f"{model} {optimizer}: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="gpt-2x64,gpt-6x384")
    parser.add_argument("--optimizers", default="AdamW,Adam,SGD")
    parser.add_argument("--out", default=None, help="append the markdown table to this file")
    args = parser.parse_args(argv)
    lines = [
        "| model | optimizer | cache | import torch | import momenta | first step | later steps (median) |",
        "|---|---|---|---|---|---|---|",
    ]
    for model in args.models.split(","):
        for optimizer in args.optimizers.split(","):
            with tempfile.TemporaryDirectory() as cache:
                for kind in ("cold", "warm"):
                    started = time.perf_counter()
                    r = measure(model, optimizer, cache)
                    print(f"{model} {optimizer} {kind}: {time.perf_counter() - started:.1f} s wall", file=sys.stderr)
                    lines.append(
                        f"| {model} | {optimizer} | {kind} | {r['torch']:.2f} s | {r['momenta']:.2f} s | "
                        f"{r['first']:.2f} s | {r['later'] * 1e3:.2f} ms |"
                    )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "a") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
