"""A real training loop (forward, backward, clip_grad_norm_, step, zero_grad) on GPT and
residual-MLP models: momenta vs torch.optim (default, foreach, fused), in lockstep.
Writes benchmarks/RESULTS-loop.md (a run with every option at its default; else --out FILE).

    python benchmarks/bench_loop.py [--models gpt-2x64,gpt-6x384] [--optimizers AdamW] [--iters 30]

Same as ``momenta bench --loop``; see momenta/bench/loop.py for what is measured and how.
"""

from __future__ import annotations

import sys

from momenta.bench.loop import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], default_out="benchmarks/RESULTS-loop.md"))
