"""The text task: a small character-level GPT, where optimizers differ more than on a table.

    text       c₁ … c_N (UTF-8), vocabulary = its distinct characters, sorted
    split      train c[: 0.8N], validation c[0.8N : 0.9N], test c[0.9N :] (contiguous: no
               window crosses from one into another)
    batch      B windows of T + 1 characters of the training text, at offsets drawn from
               torch.Generator().manual_seed(split_seed·1_000_003 + epoch·1_009 + step) (the
               same for every optimizer); x = the first T, y = the next T
    model      momenta.bench.models.GPT: L pre-LN blocks W wide, max(1, W/32) heads (W/32
               rounded down to a divisor of W), weights tied, N(0, 0.02²) init from
               torch.manual_seed(seed)
    loss       mean next-character cross-entropy (nats)
    epoch      STEPS_PER_EPOCH steps; val_loss = mean cross-entropy over EVAL_WINDOWS fixed
               windows of the validation text; test_acc = next-character accuracy over
               EVAL_WINDOWS fixed windows of the test text

Data: ``text`` is the shipped Shakespeare (public domain; ``data/README.md`` says where it
comes from), ``text:PATH`` any UTF-8 text at least 10·(T + 1) characters long. At the default
``gpt:2,64`` a step takes about 25 ms on one CPU thread: the default 20 epochs are about a
minute per optimizer (plus a one-time compilation of the fast path's kernels).

Learning rates: without ``--lr``, each optimizer starts from :data:`LR` (the usual starting
points for a small transformer, not tuned results: ``--sweep lr=…`` compares fairly), 1e-3 for
one it does not name.
"""

from __future__ import annotations

import math
from importlib import resources
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from momenta.bench.models import GPT, GPTConfig
from momenta.compare.errors import DataError, UsageError
from momenta.compare.tasks import Batch, Model, Task

SHIPPED = "shakespeare.txt"
CONTEXT = 64
STEPS_PER_EPOCH = 100
EPOCHS = 15
EVAL_WINDOWS = 64
DEFAULT_MODEL = "gpt:2,64"
#: the validation loss of the time to target (nats per character; on the shipped text the
#: character frequencies give 3.28, an add-one bigram model of the training text 2.44 on
#: the test text)
TARGET = 2.0


#: each optimizer's learning rate on the text task when ``--lr`` does not say
LR: dict[str, float] = {
    "sgd": 0.3,
    "sgdm": 0.3,  # the seed's EMA form: m is on g's scale
    "adagrad": 0.03,
    "rmsprop": 1e-3,
    "adam": 3e-3,
    "adamw": 3e-3,
    "momenta.Adam": 3e-3,
    "momenta.AdamW": 3e-3,
    "momenta.SGD": 0.03,  # torch's momentum buffer sums: ≈ 10× the step of lr·g
    "lion": 3e-4,  # sign steps: 3–10× smaller than Adam's (the paper)
    "muon": 0.02,  # Muon's default; its AdamW groups keep adamw_lr = 3e-4
}


def default_lr(optimizer: str) -> float:
    return LR.get(optimizer, 1e-3)


def model_shape(model: str) -> tuple[int, int]:
    """``"gpt:2,64"`` → (2 layers, 64 wide)."""
    if model.startswith("gpt:"):
        try:
            layers, width = (int(v) for v in model.removeprefix("gpt:").split(","))
        except ValueError:
            layers = width = 0
        if layers > 0 and width > 0:
            return layers, width
    raise UsageError(f"model must be 'gpt:LAYERS,WIDTH' (positive integers) for text data, got {model!r}")


def heads(width: int) -> int:
    """max(1, width/32) rounded down to a divisor of ``width``."""
    h = max(1, width // 32)
    while width % h:
        h -= 1
    return h


def load(spec: str) -> tuple[str, str]:
    """``(name, text)`` of ``"text"`` (shipped) or ``"text:PATH"``; :class:`DataError` for a
    file that cannot be read, is empty, binary, or too short to split."""
    if spec == "text":
        raw = resources.files("momenta.compare").joinpath("data", SHIPPED).read_bytes()
        name = "shakespeare"
    else:
        path = Path(spec.removeprefix("text:"))
        name = f"text:{path}"
        try:
            raw = path.read_bytes()
        except OSError as e:
            raise DataError(f"data {spec}: cannot read the file ({e.strerror or e})") from None
    if not raw.strip():
        raise DataError(f"data {spec}: the file is empty")
    if b"\x00" in raw:
        raise DataError(f"data {spec}: a binary file (it holds NUL bytes), not a text")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"data {spec}: not a UTF-8 text ({e.reason} at byte {e.start})") from None
    need = 10 * (CONTEXT + 1)
    if len(text) < need:
        raise DataError(
            f"data {spec}: {len(text)} characters, shorter than the {need} needed (its validation and "
            f"test tenths must each hold a window of the context length {CONTEXT} + 1)"
        )
    return name, text


class TextTask(Task):
    """The module docstring's task for ``config.data``, ``config.model``, ``config.batch_size``."""

    has_val = True

    def __init__(self, config: Any) -> None:
        self.config = config
        self.name, text = load(config.data)
        self.layers, self.width = model_shape(config.model)
        self.chars = sorted(set(text))
        index = {c: i for i, c in enumerate(self.chars)}
        codes = torch.tensor([index[c] for c in text], dtype=torch.int64)
        n = len(codes)
        self.train, self.val, self.test = codes[: int(0.8 * n)], codes[int(0.8 * n) : int(0.9 * n)], codes[int(0.9 * n) :]
        self.dtype = {"float32": torch.float32, "float64": torch.float64}[config.dtype]
        self._val = self._windows(self.val)
        self._test = self._windows(self.test)
        self._epochs: dict[int, list[Batch]] = {}

    def _windows(self, codes: Tensor) -> Batch:
        """EVAL_WINDOWS windows at evenly spaced offsets (overlapping if the text is short)."""
        last = len(codes) - CONTEXT - 1
        starts = torch.linspace(0, last, EVAL_WINDOWS).round().to(torch.int64)
        rows = torch.stack([codes[s : s + CONTEXT + 1] for s in starts.tolist()])
        return rows[:, :-1], rows[:, 1:]

    def batches(self, epoch: int) -> list[Batch]:
        found = self._epochs.get(epoch)
        if found is None:
            found = []
            last = len(self.train) - CONTEXT - 1
            for step in range(STEPS_PER_EPOCH):
                g = torch.Generator().manual_seed(self.config.split_seed * 1_000_003 + epoch * 1_009 + step)
                starts = torch.randint(0, last + 1, (self.config.batch_size,), generator=g)
                rows = torch.stack([self.train[s : s + CONTEXT + 1] for s in starts.tolist()])
                found.append((rows[:, :-1], rows[:, 1:]))
            self._epochs = {epoch: found}  # keep one epoch: every optimizer runs epoch by epoch
        return found

    def build(self, seed: int) -> Model:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            gpt = GPT(GPTConfig(self.layers, self.width, heads(self.width), len(self.chars), CONTEXT))
        gpt = gpt.to(self.dtype)

        def logits(x: Tensor) -> Tensor:  # GPT's forward up to the logits (it returns the loss)
            h = gpt.wte(x) + gpt.wpe(torch.arange(x.shape[1]))
            for block in gpt.blocks:
                h = block(h)
            return gpt.lm_head(gpt.ln_f(h))  # type: ignore[no-any-return]

        def evaluate() -> tuple[float | None, float]:
            with torch.no_grad():
                x, y = self._val
                val = float(F.cross_entropy(logits(x).flatten(0, 1), y.flatten()))
                x, y = self._test
                acc = float((logits(x).argmax(-1) == y).to(torch.float64).mean())
            return (val if math.isfinite(val) else math.inf), acc

        return Model(list(gpt.parameters()), lambda x, y: gpt(x, y), evaluate)

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "characters": len(self.train) + len(self.val) + len(self.test),
            "vocabulary": len(self.chars),
            "train_chars": len(self.train),
            "val_chars": len(self.val),
            "test_chars": len(self.test),
            "context": CONTEXT,
            "steps_per_epoch": STEPS_PER_EPOCH,
            "description": f"{self.name}: {len(self.train) + len(self.val) + len(self.test)} characters, "
            f"{len(self.chars)} distinct; train / validation / test = 80 / 10 / 10 % (contiguous); "
            f"windows of {CONTEXT} characters, {STEPS_PER_EPOCH} steps an epoch",
        }

    @property
    def default_target(self) -> float:
        return TARGET
