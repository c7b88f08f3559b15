"""Benchmarks: optimizer step times against torch.optim (``momenta bench``), and whole
training iterations of real models (``momenta bench --loop``).

* :mod:`momenta.bench.step` — synthetic steps, gradients written into place: torch's
  for-loop, foreach and fused kernels, the memory roofline, the per-step overhead;
* :mod:`momenta.bench.loop` — the loop users write (forward, backward, clip, step,
  zero_grad) on the models of :mod:`momenta.bench.models`;
* :mod:`momenta.bench.timing` — round-robin timing, shared by both.
"""

from __future__ import annotations

import argparse

from momenta.bench import common, loop, step
__all__ = ["add_arguments", "loop", "run_cli", "step"]


def add_arguments(parser: argparse.ArgumentParser, default_out: str | None = None) -> None:
    """The options of ``momenta bench``: the step benchmark's, and with ``--loop`` the loop's."""
    parser.add_argument(
        "--loop", action="store_true", help="time whole training iterations of real models instead (see --models)"
    )
    names = [c.name for c in step.CASES] + [n for n in loop.CASE_NAMES if n not in {c.name for c in step.CASES}]
    common.add_shared(parser, names, default_out)
    step.add_options(parser)
    loop.add_options(parser)


def run_cli(args: argparse.Namespace) -> int:
    """Run the loop benchmark with ``--loop``, else the step benchmark; an option of the other
    one is an error (it would be silently ignored)."""
    other = step.OPTIONS if args.loop else loop.OPTIONS
    stray = [o for o in other if getattr(args, o[2:].replace("-", "_")) is not None]
    if stray:
        where = "the step benchmark (without --loop)" if args.loop else "--loop"
        raise ValueError(f"{', '.join(stray)}: only with {where}")
    return (loop if args.loop else step).run_cli(args)
