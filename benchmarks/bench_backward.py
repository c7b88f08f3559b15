"""The optimizer step inside backward against the ordinary loop: peak memory and time of a
training iteration on the 10.7M GPT (``PRESETS["gpt-6x384"]``, AdamW).

    python benchmarks/bench_backward.py [--model gpt-6x384] [--iters 20] [--threads 1] [--batch B --seq T]

``--batch``/``--seq`` replace the preset's batch (2 sequences of 128 tokens): the step
inside backward lowers the peak only where gradients, not the forward's activations, set it
(few tokens a step for the model's size).

Modes, each its own seeded model and optimizer, the same batches:

* ``torch loop``: torch.optim.AdamW (its default, foreach): forward, backward, step, zero_grad;
* ``momenta loop``: momenta.AdamW, the same loop (the fast path: flat buffers, compiled
  kernels at this size);
* ``momenta loop, foreach=False``: the same loop on the reference path, the path the step
  inside backward takes;
* ``momenta in backward``: momenta.AdamW with :func:`momenta.integrations.step_in_backward`:
  forward, backward (each parameter steps there, its gradient freed).

Peak memory: the bytes of live tensors at the iteration's start (every tensor the garbage
collector sees, each storage once: parameters, flat buffers, optimizer state) plus the peak of
torch's CPU allocator's running total during the iteration, as torch's profiler reports it
(``profile_memory=True``: each allocation event carries the allocator's ``total_allocated``
since profiling began; torch exposes no CPU allocator statistics otherwise). Time: the median
of ``--iters`` iterations, without the profiler, modes interleaved round by round so that a
busy neighbour slows all of them alike.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn
from torch.profiler import ProfilerActivity, profile

import momenta
from momenta.bench.models import PRESETS, token_batch
from momenta.integrations import step_in_backward

Iteration = Callable[[tuple[Tensor, Tensor]], None]


def live_bytes() -> int:
    """Bytes of every live tensor's storage, each storage once."""
    gc.collect()
    seen: dict[int, int] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # some objects warn when asked what they are
        objects = [obj for obj in gc.get_objects() if isinstance(obj, Tensor)]
    for obj in objects:
        try:
            if obj.device.type == "cpu" and obj.layout == torch.strided:
                storage = obj.untyped_storage()
                seen[storage.data_ptr()] = storage.nbytes()
        except Exception:  # noqa: BLE001 - meta tensors, tensor subclasses without storage
            continue
    return sum(seen.values())


def _walk(nodes: list[Any]) -> Iterator[Any]:
    for node in nodes:
        yield node
        yield from _walk(node.children)


def peak_bytes(iteration: Iteration, batch: tuple[Tensor, Tensor]) -> tuple[int, int]:
    """(live bytes at the start, their peak during one iteration)."""
    start = live_bytes()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        iteration(batch)
    tree = prof.profiler.kineto_results.experimental_event_tree()  # type: ignore[union-attr]
    totals = [
        node.extra_fields.total_allocated
        for node in _walk(tree)
        if type(node.extra_fields).__name__ == "_ExtraFields_Allocation"
    ]
    return start, start + max([0, *totals])


def modes(build: Callable[[], nn.Module]) -> dict[str, Callable[[], tuple[nn.Module, Iteration]]]:
    """Each mode: a function making its seeded model and one training iteration."""

    def loop(make: Callable[[Any], torch.optim.Optimizer]) -> Callable[[], tuple[nn.Module, Iteration]]:
        def made() -> tuple[nn.Module, Iteration]:
            torch.manual_seed(0)
            model = build()
            opt = make(model.parameters())

            def iteration(batch: tuple[Tensor, Tensor]) -> None:
                model(*batch).backward()
                opt.step()
                opt.zero_grad()

            return model, iteration

        return made

    def in_backward() -> tuple[nn.Module, Iteration]:
        torch.manual_seed(0)
        model = build()
        step_in_backward(model, momenta.AdamW(model.parameters(), lr=1e-4))

        def iteration(batch: tuple[Tensor, Tensor]) -> None:
            model(*batch).backward()

        return model, iteration

    return {
        "torch loop": loop(lambda params: torch.optim.AdamW(params, lr=1e-4)),
        "momenta loop": loop(lambda params: momenta.AdamW(params, lr=1e-4)),
        "momenta loop, foreach=False": loop(lambda params: momenta.AdamW(params, lr=1e-4, foreach=False)),
        "momenta in backward": in_backward,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="gpt-6x384", choices=sorted(PRESETS))
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, help="sequences a batch (default: the preset's)")
    parser.add_argument("--seq", type=int, help="tokens a sequence (default: the preset's)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    preset = PRESETS[args.model]
    draw = preset.batch
    if args.batch or args.seq:
        draw = token_batch(args.batch or 2, args.seq or 128)
    factories = modes(preset.build)
    generator = torch.Generator().manual_seed(0)
    probe = preset.build()
    batches = [draw(probe, generator) for _ in range(args.warmup + args.iters + 1)]
    params = sum(p.numel() for p in probe.parameters())
    del probe

    memory = {}
    for name, factory in factories.items():  # one mode alive at a time: its bytes alone
        model, iteration = factory()
        for i in range(args.warmup):  # states created, kernels compiled
            iteration(batches[i])
        memory[name] = peak_bytes(iteration, batches[args.warmup])
        del model, iteration

    made = {name: factory() for name, factory in factories.items()}
    for i in range(args.warmup + 1):
        for _, iteration in made.values():
            iteration(batches[i])
    times: dict[str, list[float]] = {name: [] for name in made}
    for i in range(args.iters):
        for name, (_, iteration) in made.items():
            start = time.perf_counter()
            iteration(batches[args.warmup + 1 + i])
            times[name].append(time.perf_counter() - start)
    reference = made["momenta loop"][0]
    same = all(
        torch.equal(p, q)
        for p, q in zip(made["momenta loop, foreach=False"][0].parameters(), made["momenta in backward"][0].parameters())
    )
    drift = max((p - q).abs().max().item() for p, q in zip(reference.parameters(), made["momenta in backward"][0].parameters()))

    mib = 2**20
    x, _ = batches[0]
    shape = f"batch {x.shape[0]} × {x.shape[1]} tokens"
    print(f"{args.model}: {params / 1e6:.1f}M parameters, {shape}, AdamW, {args.threads} thread(s), {args.iters} iterations\n")
    print("| mode | live at start (MiB) | peak (MiB) | peak − start (MiB) | median iteration (ms) |")
    print("|---|---:|---:|---:|---:|")
    for name in made:
        start, peak = memory[name]
        median = statistics.median(times[name]) * 1e3
        print(f"| {name} | {start / mib:.1f} | {peak / mib:.1f} | {(peak - start) / mib:.1f} | {median:.1f} |")
    print(f"\nin backward vs the loop with foreach=False, parameters after every iteration: {'equal' if same else 'DIFFER'}")
    print(f"in backward vs the fast-path loop (compiled kernels): largest difference {drift:.2e}")


if __name__ == "__main__":
    main()
