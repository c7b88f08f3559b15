"""Command-line pieces shared by ``momenta bench`` (steps) and ``momenta bench --loop``:
the shared options, checks that name the bad argument, the run's environment line, output."""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable, Iterable, Sequence

import torch


def add_shared(parser: argparse.ArgumentParser, optimizers: Sequence[str], default_out: str | None) -> None:
    """``--optimizers`` (a comma list of ``optimizers``) and ``--out FILE`` (``default_out``
    where the run is the whole default one: :func:`main`)."""
    parser.add_argument("--optimizers", default=None, help="comma-separated names: " + ", ".join(optimizers))
    where = f" (default: {default_out}, for a run with every other option at its default)" if default_out else ""
    parser.add_argument("--out", default=None, help="write the markdown table to this file" + where)


def pick(text: str | None, known: Sequence[str], option: str) -> list[str] | None:
    """``"a,b"`` → ``["a", "b"]``, each one of ``known`` (None stays None: the default)."""
    if text is None:
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in known] if names else [text]
    if bad:
        raise ValueError(f"{option}: unknown {', '.join(map(repr, bad))}; known: {', '.join(known)}")
    return names


def at_least(value: int | None, minimum: int, option: str) -> None:
    """A count given on the command line must be ≥ ``minimum`` (None: not given)."""
    if value is not None and value < minimum:
        raise ValueError(f"{option} must be at least {minimum}, got {value}")


def markdown_table(columns: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A markdown table of ``columns`` over ``rows`` of cell texts."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows]) + "\n"


def environment() -> str:
    """What the numbers were measured on: torch's version, threads, processor."""
    return f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}"


def _busy_seconds() -> float | None:
    """CPU seconds every process has spent since boot (user, nice, system, irq, softirq in
    /proc/stat); None where there is no /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()[1:8]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in fields)
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def others_cpu() -> Callable[[], float | None]:
    """Start counting; the returned function gives the share of all cores (0–1) that other
    processes took since: busy CPU time minus this process's, over cores × wall time. Above
    ~0.1, something competed with the run and its threads' times swell."""
    busy, mine, wall = _busy_seconds(), time.process_time(), time.perf_counter()

    def share() -> float | None:
        now = _busy_seconds()
        if busy is None or now is None:
            return None
        others = (now - busy) - (time.process_time() - mine)
        return max(0.0, others) / ((os.cpu_count() or 1) * (time.perf_counter() - wall))

    return share


def prepare() -> None:
    """One Inductor compile thread: a pool of compile workers would compete with the timing."""
    os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")


def report(text: str, out: str | None, title: str) -> None:
    """Print ``text``; with ``out``, also write it under a ``# title`` heading."""
    print(text)
    if out:
        with open(out, "w") as f:
            f.write(f"# {title}\n\n{text}")


def main(
    argv: Sequence[str] | None,
    prog: str,
    description: str,
    add_arguments: Callable[[argparse.ArgumentParser, str | None], None],
    run_cli: Callable[[argparse.Namespace], int],
    default_out: str | None = None,
) -> int:
    """A benchmarks/ script: parse ``argv``, run; bad input exits 2 naming the argument.
    Without ``--out``, the table goes to ``default_out`` (the results file README cites)
    only where every other option is at its default: a partial run (some models, fewer
    iterations) prints its table and leaves the file as it is."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    add_arguments(parser, default_out)
    args = parser.parse_args(argv)
    if args.out is None and default_out is not None:
        changed = [name for name, value in vars(args).items() if name != "out" and value != parser.get_default(name)]
        if changed:
            options = ", ".join("--" + name.replace("_", "-") for name in changed)
            progress(f"a partial run ({options}): {default_out} is left as it is (--out FILE writes the table)")
        else:
            args.out = default_out
    try:
        return run_cli(args)
    except ValueError as error:
        parser.error(str(error))  # exits 2
        return 2


def progress(message: str) -> None:
    """Progress lines go to stderr, so stdout is the table alone."""
    print(message, file=sys.stderr, flush=True)
