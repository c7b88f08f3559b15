"""The ``momenta`` command: ``momenta compare``, ``momenta landscape`` and ``momenta bench``.

    momenta compare                          the classic iris setup, the seed's five
    momenta compare --optimizers adam,torch:Adam --set adam.lr=0.01 --epochs 100
    momenta compare --sweep lr=1e-3:1:5 --repeats 3 --inspect   tuned on held-out rows; m and V
    momenta compare --data text --optimizers adamw,muon,lion     a character-level GPT
    momenta landscape --function beale --gif
    momenta bench --sets 2000x4096           step time against torch.optim, and the roofline
    momenta bench --loop --models gpt-2x64   a real training loop's step and iteration times

Exit codes: 0 done; 1 an optimizer failed (raised) during training; 2 bad input (the message
names the argument and the value, no traceback); 130 interrupted by Ctrl-C (what finished is
saved). Each subcommand is one ``add_*`` function; a new one (``bench``) is one more.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from momenta import registry
from momenta.compare import data as datasets
from momenta.compare import experiment, options, report
from momenta.compare import text as text_task
from momenta.compare.errors import UsageError
from momenta.compare.landscape import FUNCTIONS, LandscapeResult, landscape

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``momenta`` with ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse: --help (0) or a malformed command line (2)
        return int(e.code or 0)
    if not hasattr(args, "run"):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.run(args))
    except (UsageError, registry.UnknownOptimizerError) as e:
        print(f"momenta {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:  # before training began (during it, what finished is saved)
        print(f"momenta {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="momenta",
        description="Optimizers as w ← w − lr·m/√V: compare them, draw their trajectories.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_compare(commands)
    add_landscape(commands)
    add_bench(commands)
    return parser


def add_bench(commands: Any) -> argparse.ArgumentParser:
    """``momenta bench``: optimizer step times against torch.optim; ``--loop``: whole training
    iterations of real models (see momenta.bench)."""
    from momenta import bench

    p = commands.add_parser(
        "bench",
        help="time optimizer steps (or, with --loop, training iterations) against torch.optim's "
        "for-loop, foreach and fused kernels",
        description=(bench.__doc__ or "").split("\n\n")[0],
    )
    bench.add_arguments(p)

    def run(args: argparse.Namespace) -> int:
        try:
            return bench.run_cli(args)
        except ValueError as error:
            raise UsageError(str(error)) from None

    p.set_defaults(run=run)
    return p


# ---------------------------------------------------------------- shared options


def _names(values: Sequence[str]) -> tuple[str, ...]:
    """``--optimizers a,b c`` → (a, b, c)."""
    return tuple(n.strip() for v in values for n in v.split(",") if n.strip())


def _overrides(assignments: Sequence[str] | None) -> dict[str, dict[str, Any]]:
    """``--set adam.lr=0.01 --set adam.beta1=0.8`` → {"adam": {"lr": 0.01, "beta1": 0.8}}."""
    hyper: dict[str, dict[str, Any]] = {}
    for text in assignments or []:
        name, param, value = options.parse_assignment(text)
        hyper.setdefault(name, {})[param] = value
    return hyper


def _point(text: str) -> tuple[float, float]:
    try:
        x, y = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected X,Y (two numbers), got {text!r}") from None
    return x, y


def _add_common(p: argparse.ArgumentParser, default_optimizers: Sequence[str]) -> None:
    p.add_argument(
        "--optimizers",
        nargs="+",
        default=[",".join(default_optimizers)],
        metavar="NAME",
        help="registered names, comma or space separated (default: "
        f"{','.join(default_optimizers)}); torch:NAME runs torch.optim.NAME side by side",
    )
    p.add_argument(
        "--set",
        action="append",
        metavar="OPT.PARAM=VALUE",
        dest="assignments",
        help="a hyperparameter of one optimizer, e.g. --set adam.lr=0.01 "
        "--set torch:Adam.betas=(0.9,0.99); repeatable",
    )
    p.add_argument(
        "--format",
        choices=options.FORMATS,
        default="png",
        help="plot file format (default: %(default)s)",
    )
    p.add_argument(
        "--out", metavar="DIR", help="output directory (default: ./momenta-runs/<name>-<timestamp>)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _say(text: str) -> None:
    print(text, flush=True)


# ---------------------------------------------------------------- compare


def add_compare(commands: Any) -> argparse.ArgumentParser:
    d = experiment.CompareConfig()
    p = commands.add_parser(
        "compare",
        help="train one classifier per optimizer and compare loss, accuracy and time",
        description="Train the same model from the same start with each optimizer; write "
        "loss and accuracy plots, metrics.csv, summary.json and report.html. With no "
        "arguments: the classic iris experiment's setup (its split; torch's initial weights) "
        "with the seed's five optimizers.",
    )
    _add_common(p, d.optimizers)
    p.add_argument(
        "--lr",
        type=float,
        default=d.lr,
        help="learning rate of every optimizer (default: each optimizer's own for this task, "
        "0.1 for the seed's five and most others; --set NAME.lr=… for one)",
    )
    p.add_argument(
        "--epochs",
        type=int,
        default=None,
        help=f"default: {d.epochs} ({text_task.EPOCHS} of {text_task.STEPS_PER_EPOCH} steps for --data text)",
    )
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="default: %(default)s")
    p.add_argument(
        "--seed", type=int, default=d.seed, help="weight-init seed (default: %(default)s)"
    )
    p.add_argument(
        "--split-seed",
        type=int,
        default=d.split_seed,
        help="row-shuffle seed of the train/test split (default: %(default)s)",
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=d.repeats,
        help="init seeds seed … seed+N−1; plots show mean and min–max band",
    )
    p.add_argument(
        "--data",
        default=d.data,
        metavar="NAME",
        help=f"{' | '.join(datasets.known())} | text | text:PATH (default: %(default)s); text: "
        "a character-level GPT on the shipped public-domain Shakespeare, or on a UTF-8 file",
    )
    p.add_argument("--target", metavar="COLUMN", help="label column of a CSV data set")
    p.add_argument(
        "--model",
        default=None,
        metavar="linear|mlp:H1,H2|gpt:L,W",
        help=f"linear softmax layer (default), an MLP with ReLU hidden layers, or for --data text "
        f"a GPT of L layers W wide (default {text_task.DEFAULT_MODEL})",
    )
    p.add_argument(
        "--loss",
        choices=experiment.LOSSES,
        default=None,
        help="mse: mean (softmax − onehot)² (classic, the default); ce: cross-entropy (text: always)",
    )
    p.add_argument(
        "--scale",
        choices=datasets.SCALES,
        default=d.scale,
        help="standard: z-score features with training-row statistics "
        "(advisable for wine, breast_cancer, digits)",
    )
    p.add_argument("--dtype", choices=tuple(experiment.DTYPES), default=d.dtype)
    p.add_argument(
        "--sweep",
        metavar="PARAM=LOW:HIGH:N",
        help="tune PARAM for each optimizer: N values from LOW to HIGH, log-spaced when "
        "0 < LOW and HIGH ≥ 10·LOW, else linear (force with PARAM=log:… or PARAM=lin:…); "
        "PARAM is any hyperparameter (lr, momentum, beta1) or a tuple's element (betas.0). "
        "Each value runs --repeats seeds on the training rows less a validation split; the "
        "value with the lowest mean validation loss is chosen and only its test numbers are "
        "reported; same N, seeds and epochs for every optimizer. Writes sweep.csv and "
        "sensitivity.png",
    )
    p.add_argument(
        "--val-fraction",
        type=float,
        default=d.val_fraction,
        help="share of the training rows held out (stratified by class) for --sweep's choice, "
        "in (0, 0.5] (default: %(default)s)",
    )
    p.add_argument(
        "--inspect",
        action="store_true",
        help="record m, V, the update-to-weight ratio and the last update of each momenta "
        "optimizer after every epoch (inspect.csv, inspect.png; momenta.inspect)",
    )
    p.add_argument(
        "--target-loss",
        type=float,
        metavar="LOSS",
        help="the loss of the time-to-target column (validation loss when measured, else "
        "training loss; default: the task's, 0.05 for mse, 0.3 for ce, "
        f"{text_task.TARGET} for text)",
    )
    p.add_argument(
        "--landscape",
        nargs="?",
        const="rosenbrock",
        metavar="FUNCTION",
        help=f"also run the same optimizers on a 2-D test function ({', '.join(FUNCTIONS)}; "
        "default rosenbrock), each at the function's own lr, into OUT/landscape/; the report "
        "embeds its plot and links its report",
    )
    p.set_defaults(run=run_compare)
    return p


def run_compare(args: argparse.Namespace) -> int:
    is_text = args.data == "text" or args.data.startswith("text:")
    d = experiment.CompareConfig()
    config = experiment.CompareConfig(
        optimizers=_names(args.optimizers),
        lr=args.lr,
        hyper=_overrides(args.assignments),
        epochs=args.epochs if args.epochs is not None else (text_task.EPOCHS if is_text else d.epochs),
        batch_size=args.batch_size,
        seed=args.seed,
        split_seed=args.split_seed,
        repeats=args.repeats,
        data=args.data,
        target=args.target,
        model=args.model if args.model is not None else (text_task.DEFAULT_MODEL if is_text else d.model),
        loss=args.loss if args.loss is not None else ("ce" if is_text else d.loss),
        scale=args.scale,
        dtype=args.dtype,
        inspect=args.inspect,
        landscape=args.landscape,
        sweep=args.sweep,
        val_fraction=args.val_fraction,
        target_loss=args.target_loss,
    )
    out = args.out if args.out is not None else report.default_out(_run_name(args.data))
    result = experiment.run_compare(
        config,
        out=out,
        format=args.format,
        progress=_progress(args),
        log=_say,
    )
    _say(report.compare_table(result))
    return _finish(result.out, result.interrupted, [r.status for r in result.results.values()])


def _run_name(data: str) -> str:
    """compare-iris, compare-csv-<file stem>."""
    if data.startswith("text:"):
        return f"compare-text-{Path(data[5:]).stem}"
    return "compare-" + (f"csv-{Path(data[4:]).stem}" if data.startswith("csv:") else data)


def _progress(args: argparse.Namespace) -> bool:
    return not args.quiet and sys.stderr.isatty()


def _finish(out: Any, interrupted: bool, statuses: Sequence[str]) -> int:
    if interrupted:
        _say(f"interrupted: saved what finished to {out}")
        return EXIT_INTERRUPTED
    _say(f"results: {out}/report.html")
    return EXIT_FAILED if any(s.startswith("failed") for s in statuses) else EXIT_OK


# ---------------------------------------------------------------- landscape


def add_landscape(commands: Any) -> argparse.ArgumentParser:
    names = ", ".join(FUNCTIONS)
    p = commands.add_parser(
        "landscape",
        help="optimizer trajectories on a 2-D test function, over its contour plot",
        description=f"Run each optimizer from the same start on a 2-D test function ({names}) "
        "and draw the trajectories over the contour plot; write trajectory.csv, "
        "summary.json and report.html.",
    )
    _add_common(p, options.SEED_OPTIMIZERS)
    p.add_argument(
        "--function", default="rosenbrock", metavar="NAME", help=f"{names} (default: %(default)s)"
    )
    p.add_argument("--lr", type=float, help="learning rate (default: the function's own)")
    p.add_argument("--steps", type=int, help="number of steps (default: the function's own)")
    p.add_argument(
        "--start",
        type=_point,
        metavar="X,Y",
        help="start point (default: the function's own); write --start=-1.5,2 when X < 0",
    )
    p.add_argument("--gif", action="store_true", help="also write an animated landscape.gif")
    p.set_defaults(run=run_landscape)
    return p


def run_landscape(args: argparse.Namespace) -> int:
    out = args.out if args.out is not None else report.default_out(f"landscape-{args.function}")
    result = landscape(
        args.function,
        _names(args.optimizers),
        lr=args.lr,
        hyper=_overrides(args.assignments),
        steps=args.steps,
        start=args.start,
        out=out,
        format=args.format,
        gif=args.gif,
        log=_say,
    )
    _say(landscape_table(result))
    return _finish(result.out, result.interrupted, [t.status for t in result.trajectories.values()])


def landscape_table(result: LandscapeResult) -> str:
    rows = [
        [
            name,
            report.fmt(s["final_f"]),
            report.fmt(s["final_distance_to_minimum"]),
            report.fmt(s["first_step_within_1e-3"]),
            report.fmt(s["total_time_s"], 3),
            s["status"],
        ]
        for name, s in result.summary()["optimizers"].items()
    ]
    return report.text_table(
        ["optimizer", "final f", "distance to min", "first step within 1e-3", "time s", "status"],
        rows,
    )


if __name__ == "__main__":
    sys.exit(main())
