"""What reading an optimizer costs: ``momenta.inspect`` against the step it reads.

    python benchmarks/bench_inspect.py [--models gpt-2x64,gpt-6x384,resmlp-150] [--optimizer AdamW]
                                       [--rounds 20] [--threads 1]

For each model (momenta.bench.models.PRESETS) one momenta optimizer over nanoGPT's param
groups (momenta.bench.models.param_groups: decay on matrices, none on the rest, so a read
takes three medians: the optimizer's and each group's), its gradients drawn once and kept,
timed round-robin (momenta.bench.timing: every variant once a round, the median of
the rounds after warm-up):

    step           optimizer.step()
    step + hook    optimizer.step() with an Inspector attached (its pre-hook copies the weights)
    step + read    the same, then inspector.read() (every step, as a training loop would:
                   each read works out the new step's Δw)
    read per param inspector.read(per_parameter=True), alone
    iteration      a whole training iteration without a read: zero_grad(), forward,
                   backward, step() (the hook attached)

and prints a table in milliseconds: the read's own cost is (step + read) − (step + hook),
also as a multiple of the step and as a share of the iteration (what reading at every
step adds to training); the hook's is (step + hook) − step.
"""

from __future__ import annotations

import argparse
import statistics
import sys

import torch

import momenta
from momenta.bench.models import PRESETS, param_groups
from momenta.bench.timing import Variant, round_robin, timed


def measure(preset: str, optimizer: str, rounds: int) -> dict[str, float]:
    p = PRESETS[preset]
    generator = torch.Generator().manual_seed(0)
    times: dict[str, float] = {}
    variants = []
    for label in ("step", "step + hook", "step + read", "read per param", "iteration"):
        torch.manual_seed(0)
        model = p.build()
        x, y = p.batch(model, generator)
        opt = getattr(momenta, optimizer)(param_groups(model), lr=1e-3)
        model(x, y).backward()
        opt.step()  # state, layout, compiled kernels: before the clock
        if label == "step":
            variants.append(Variant(label, timed(opt.step)))
            continue
        inspector = momenta.Inspector(opt)
        opt.step()
        if label == "step + hook":
            variants.append(Variant(label, timed(opt.step)))
        elif label == "step + read":
            variants.append(Variant(label, timed(lambda o=opt, i=inspector: (o.step(), i.read()))))
        elif label == "iteration":

            def iteration(o=opt, m=model, x=x, y=y):
                o.zero_grad()
                m(x, y).backward()
                o.step()

            variants.append(Variant(label, timed(iteration)))
        else:
            variants.append(Variant(label, timed(lambda i=inspector: i.read(per_parameter=True))))
    round_robin(variants, rounds, warmup=3)
    for v in variants:
        times[v.label] = statistics.median(v.times["step"]) * 1e3
    n = sum(q.numel() for q in p.build().parameters())
    tensors = len(list(p.build().parameters()))
    times["params"] = n
    times["tensors"] = tensors
    return times


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--models", default="gpt-2x64,gpt-6x384,resmlp-150")
    parser.add_argument("--optimizer", default="AdamW")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"{args.optimizer}, {args.threads} thread(s), torch {torch.__version__}; median ms over {args.rounds} rounds")
    print(f"{'model':12} {'params':>10} {'tensors':>7} {'step':>8} {'+hook':>8} {'+read':>8} {'read':>8} "
          f"{'read/step':>9} {'iteration':>9} {'read/iter':>9} {'per-param':>9}")  # fmt: skip
    for name in args.models.split(","):
        t = measure(name, args.optimizer, args.rounds)
        read = t["step + read"] - t["step + hook"]
        print(
            f"{name:12} {int(t['params']):>10} {int(t['tensors']):>7} {t['step']:>8.3f} {t['step + hook']:>8.3f} "
            f"{t['step + read']:>8.3f} {read:>8.3f} {read / t['step']:>8.2f}x {t['iteration']:>9.3f} "
            f"{read / t['iteration']:>8.0%} {t['read per param']:>9.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
