"""Optimizer step time: momenta vs torch.optim (for-loop, foreach, fused), with the memory
roofline measured in the same rounds. Writes benchmarks/RESULTS.md (a run with every option at its
default; else --out FILE).

    python benchmarks/bench_step.py [--sets 16x1M,2000x4096,gpt2-small,overhead] [--rounds 7]

Same as ``momenta bench``; see momenta/bench/step.py for what is measured and how.
"""

from __future__ import annotations

import sys

from momenta.bench.step import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], default_out="benchmarks/RESULTS.md"))
