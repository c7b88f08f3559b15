"""A tiny nanoGPT (momenta.bench.models.GPT) and seeded token batches, shared by the tests."""

from __future__ import annotations

import torch

from momenta.bench.models import GPT, GPTConfig

VOCAB, CONTEXT = 64, 16


def tiny_gpt(seed: int = 0, dtype: torch.dtype = torch.float32) -> GPT:
    """2 blocks 32 wide, vocabulary 64: 28 tensors (wte tied to lm_head), 0.03M elements.
    Comparisons with torch.optim take it in float64: in float32, Adam turns the rounding
    noise of gradients that are 0 in exact arithmetic (the key projection's bias) into
    steps of ±lr, and two implementations that agree to rounding drift apart after a step."""
    torch.manual_seed(seed)
    return GPT(GPTConfig(2, 32, 4, vocab=VOCAB, context=CONTEXT)).to(dtype)


def batch(i: int, size: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch ``i``: random tokens and their next tokens, the same for every run."""
    tokens = torch.randint(VOCAB, (size, CONTEXT + 1), generator=torch.Generator().manual_seed(1000 + i))
    return tokens[:, :-1], tokens[:, 1:]


#: float64 models trained by two implementations that agree to rounding
CLOSE = dict(rtol=1e-9, atol=1e-10)


def assert_same_params(a: torch.nn.Module, b: torch.nn.Module, **tolerance: float) -> None:
    """The two models' parameters are equal (exactly, without ``tolerance``)."""
    if not tolerance:
        tolerance = dict(rtol=0.0, atol=0.0)
    for (name, p), (_, q) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        torch.testing.assert_close(p, q, **tolerance, msg=lambda m: f"{name}: {m}")
