"""What the scenarios share: the model, the data, the training loop, and comparisons that
collect mismatches (instead of stopping at the first) so one run reports every optimizer.

Everything is float64 and deterministic: the same data on every run, a fixed split of each
global batch between ranks, and reductions (gloo's allreduce and reduce-scatter) that give
the same bits for the same inputs. Results are compared at ``RTOL = 1e-9``, with no absolute
tolerance (so a second moment of 1e-6 is held to the same relative precision as a weight),
or exactly where the same code runs on the same data (a resumed run and an uninterrupted one).
"""

from __future__ import annotations

import itertools
import traceback
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.distributed.tensor import DTensor

RTOL = 1e-9
STEPS = 4
GLOBAL_BATCH = 8
DIMS = (6, 5, 3, 1)  # FSDP2 on 2 ranks: 5 rows shard 3 + 2, 3 rows 2 + 1, 1 row 1 + 0 (empty)


@dataclass
class Context:
    """What a scenario knows about its rank."""

    rank: int
    world_size: int
    backend: str
    device: torch.device
    tmp: Path  # a directory shared by all ranks of this run

    @property
    def rows(self) -> slice:
        """This rank's rows of every global batch."""
        per = GLOBAL_BATCH // self.world_size
        return slice(self.rank * per, (self.rank + 1) * per)


class Lookup(nn.Module):
    """A table whose gradient is sparse (``nn.Embedding(sparse=True)``): each input row is
    replaced by the table row that its largest feature picks, so that a batch touches some
    rows (some more than once) and leaves the others."""

    def __init__(self, rows: int, generator: torch.Generator) -> None:
        super().__init__()
        self.table = nn.Embedding(rows, rows, sparse=True, dtype=torch.float64)
        with torch.no_grad():
            self.table.weight.copy_(torch.rand(rows, rows, generator=generator, dtype=torch.float64) - 0.5)

    def forward(self, x: Tensor) -> Tensor:
        return self.table(x.argmax(dim=1))


def make_model(device: torch.device, seed: int = 0, dims: tuple[int, ...] = DIMS, *,
               sparse: bool = False) -> nn.Sequential:  # fmt: skip
    """A small tanh MLP (float64), the same on every rank for the same seed; ``sparse``: with
    a :class:`Lookup` table in front, the one parameter whose gradient is sparse."""
    assert dims[0] == DIMS[0] and dims[-1] == DIMS[-1], "the data's shapes"
    generator = torch.Generator().manual_seed(seed)
    layers: list[nn.Module] = [Lookup(dims[0], generator)] if sparse else []
    for i, (n_in, n_out) in enumerate(itertools.pairwise(dims)):
        linear = nn.Linear(n_in, n_out, dtype=torch.float64)
        with torch.no_grad():
            for p in linear.parameters():
                p.copy_(torch.rand(p.shape, generator=generator, dtype=torch.float64) - 0.5)
        layers += [linear, nn.Tanh()] if i < len(dims) - 2 else [linear]
    return nn.Sequential(*layers).to(device)


def batch(step: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Global batch number ``step`` (inputs, targets)."""
    generator = torch.Generator().manual_seed(1000 + step)
    x = torch.randn(GLOBAL_BATCH, DIMS[0], generator=generator, dtype=torch.float64)
    y = torch.randn(GLOBAL_BATCH, DIMS[-1], generator=generator, dtype=torch.float64)
    return x.to(device), y.to(device)


def loss_of(model: nn.Module, step: int, rows: slice, device: torch.device) -> Tensor:
    x, y = batch(step, device)
    return nn.functional.mse_loss(model(x[rows]), y[rows])


def train(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    device: torch.device,
    rows: slice = slice(None),
    steps: range = range(STEPS),
) -> list[float]:
    """Train on ``rows`` of the batches numbered ``steps``; return the losses."""
    losses = []
    for step in steps:
        opt.zero_grad()
        loss = loss_of(model, step, rows, device)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def evaluate(model: nn.Module, rows: slice, device: torch.device) -> float:
    """The loss on a batch no step has seen: a forward pass through the current weights
    (under FSDP2, all-gathered from its sharded storage, where the optimizer must write)."""
    with torch.no_grad():
        return loss_of(model, 10_000, rows, device).item()


def local(t: Any) -> Any:
    return t.to_local() if isinstance(t, DTensor) else t


def full(t: Tensor) -> Tensor:
    """The whole tensor (a collective for a DTensor: call it on every rank)."""
    return t.full_tensor() if isinstance(t, DTensor) else t


def snapshot(params: Iterable[Tensor]) -> list[Tensor]:
    return [local(p).detach().clone() for p in params]


def state_of(opt: torch.optim.Optimizer, params: Iterable[Tensor]) -> list[dict[str, Any]]:
    """The optimizer's state of each of ``params`` (an empty dict where it keeps none)."""
    return [dict(opt.state.get(p, {})) for p in params]


@dataclass
class Mismatches:
    """The mismatches of one case, as readable lines."""

    lines: list[str] = field(default_factory=list)

    def fail(self, what: str, detail: str) -> None:
        self.lines.append(f"{what}: {detail}")

    def check(self, what: str, ok: bool, detail: str = "") -> None:
        if not ok:
            self.fail(what, detail or "check failed")

    def close(self, what: str, actual: Any, expected: Any, *, exact: bool = False) -> None:
        """``actual`` equals ``expected`` (tensors, lists, floats), to RTOL or exactly."""
        try:
            torch.testing.assert_close(actual, expected, rtol=0.0 if exact else RTOL, atol=0.0)
        except (AssertionError, TypeError, ValueError) as e:
            self.fail(what, " ".join(str(e).split())[:600])

    def same_state(self, what: str, actual: list[dict[str, Any]], expected: list[dict[str, Any]],
                   *, same_keys: bool, exact: bool = False, scalar_dtypes: bool = True,
                   ) -> None:  # fmt: skip
        """Per-parameter optimizer states: the same kind of tensor (a DTensor placed the
        same, or a plain tensor), dtype and values. ``same_keys``: also the same key set
        (drop-ins); otherwise only the keys both keep are compared. Without
        ``scalar_dtypes``, 0-dim entries may differ in dtype (torch.optim's load_state_dict
        casts NAdam's mu_product, ASGD's eta and mu to the parameter's dtype)."""
        for i, (sa, se) in enumerate(zip(actual, expected, strict=True)):
            if same_keys:
                self.check(f"{what}: state keys of param {i}", sorted(sa) == sorted(se),
                           f"{sorted(sa)} != {sorted(se)}")  # fmt: skip
            for key in sorted(set(sa) & set(se)):
                a, e = sa[key], se[key]
                where = f"{what}: state[{i}][{key!r}]"
                if not (torch.is_tensor(a) and torch.is_tensor(e)):
                    self.check(where, a == e, f"{a!r} != {e!r}")
                    continue
                self.check(where, type(a) is type(e), f"{type(a).__name__} != {type(e).__name__}")
                if isinstance(a, DTensor) and isinstance(e, DTensor):
                    self.check(where, a.placements == e.placements,
                               f"placements {a.placements} != {e.placements}")  # fmt: skip
                    self.check(where, a.shape == e.shape, f"shape {a.shape} != {e.shape}")
                if not scalar_dtypes and a.dim() == 0 and e.dim() == 0 and a.dtype != e.dtype:
                    # one of them went on in float64 after the load: float32's precision
                    try:
                        torch.testing.assert_close(a.double(), e.double(), rtol=1e-6, atol=0.0)
                    except AssertionError as error:
                        self.fail(where, " ".join(str(error).split())[:600])
                    continue
                self.close(where, local(a), local(e), exact=exact)

    def same_on_all_ranks(self, what: str, tensors: list[Tensor]) -> None:
        """Every rank holds the same values (bit for bit), e.g. DDP replicas. Collective."""
        flat = torch.cat([local(t).detach().reshape(-1) for t in tensors])
        gathered = [torch.empty_like(flat) for _ in range(dist.get_world_size())]
        dist.all_gather(gathered, flat)
        for rank, other in enumerate(gathered):
            self.check(what, torch.equal(other, gathered[0]),
                       f"rank {rank} differs from rank 0 by "
                       f"{(other - gathered[0]).abs().max().item():.3g}")  # fmt: skip


class Report:
    """Mismatches of every case, keyed by case name: what a scenario returns."""

    def __init__(self) -> None:
        self.cases: dict[str, list[str]] = {}

    @contextmanager
    def case(self, name: str) -> Iterator[Mismatches]:
        """Collect the mismatches of case ``name``, and an exception it raises (the ranks
        run the same code, so a library error is raised on all of them alike and the next
        case starts in step; if not, the collectives' timeout ends the run)."""
        m = Mismatches()
        try:
            yield m
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as e:  # noqa: BLE001 - DCP's CheckpointException is a BaseException
            m.fail("raised", describe(e))
        self.cases[name] = m.lines

    def result(self) -> dict[str, list[str]]:
        return self.cases


def describe(exc: BaseException, lines: int = 25) -> str:
    """The exception and the end of its traceback."""
    text = "".join(traceback.format_exception(exc)).rstrip().splitlines()
    return "\n".join(text[-lines:])
