"""The models of the training-loop benchmark: a nanoGPT-style GPT and a residual MLP.

GPT (Radford et al. 2019, as Karpathy's nanoGPT writes it), for tokens x₁…x_T:

    h₀ = wte[x] + wpe[0…T−1]
    h  = h + Attn(LN₁(h)),  h = h + MLP(LN₂(h))          (each of L pre-LN blocks)
    logits = LN_f(h) · wteᵀ                               (the head shares wte, no bias)

with causal self-attention through ``F.scaled_dot_product_attention`` and MLP(h) =
W₂·GELU(W₁·h), W₁ four times as wide as the model. A block holds 12 tensors; the model
12·L + 4 (wte, wpe, LN_f's weight and bias).

Residual MLP: h = W_in·x, then N blocks h = h + W·LN(h) + b (64 wide), then a linear head:
4·N + 4 tensors, many of them small: the per-tensor overhead of an optimizer shows.

:func:`param_groups` builds nanoGPT's two groups: weight decay on every parameter with
dim ≥ 2 (matrices, embeddings), none on biases and LayerNorm gains.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# -- GPT ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GPTConfig:
    """A GPT's shape: ``layers`` blocks ``width`` wide, ``heads`` attention heads."""

    layers: int
    width: int
    heads: int
    vocab: int
    context: int


class CausalSelfAttention(nn.Module):
    """softmax(q·kᵀ/√d + causal mask)·v over ``heads`` heads, then a projection."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.c_attn = nn.Linear(width, 3 * width)
        self.c_proj = nn.Linear(width, width)

    def forward(self, x: Tensor) -> Tensor:
        batch, time, width = x.shape
        q, k, v = (
            t.view(batch, time, self.heads, width // self.heads).transpose(1, 2)
            for t in self.c_attn(x).split(width, dim=2)
        )
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).reshape(batch, time, width))


class Block(nn.Module):
    """h + Attn(LN₁(h)), then h + W₂·GELU(W₁·LN₂(h))."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = CausalSelfAttention(width, heads)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """nanoGPT's model; ``model(x, y)`` is the mean cross-entropy of next tokens ``y``."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab, config.width)
        self.wpe = nn.Embedding(config.context, config.width)
        self.blocks = nn.ModuleList(Block(config.width, config.heads) for _ in range(config.layers))
        self.ln_f = nn.LayerNorm(config.width)
        self.lm_head = nn.Linear(config.width, config.vocab, bias=False)
        self.lm_head.weight = self.wte.weight  # weight tying, as in GPT-2 and nanoGPT
        self.apply(_init_normal)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        h = self.wte(x) + self.wpe(torch.arange(x.shape[1], device=x.device))
        for block in self.blocks:
            h = block(h)
        logits = self.lm_head(self.ln_f(h))
        return F.cross_entropy(logits.flatten(0, 1), y.flatten())


# -- residual MLP ----------------------------------------------------------------------------


class ResidualMLP(nn.Module):
    """h = W_in·x, N times h = h + W·LN(h) + b, then logits = W_out·h + b_out;
    ``model(x, y)`` is the mean cross-entropy of classes ``y``."""

    def __init__(self, blocks: int, width: int = 64, inputs: int = 16, classes: int = 10) -> None:
        super().__init__()
        self.inputs = inputs
        self.classes = classes
        self.embed = nn.Linear(inputs, width)
        self.blocks = nn.ModuleList(nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width)) for _ in range(blocks))
        self.head = nn.Linear(width, classes)
        self.apply(_init_normal)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        h = self.embed(x)
        for block in self.blocks:
            h = h + block(h)
        return F.cross_entropy(self.head(h), y)


def _init_normal(module: nn.Module) -> None:
    """nanoGPT's init: weights of linear layers and embeddings ~ N(0, 0.02²), biases 0."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


# -- parameter groups and counts -------------------------------------------------------------


def param_groups(model: nn.Module, weight_decay: float = 0.1) -> list[dict[str, Any]]:
    """nanoGPT's groups: ``weight_decay`` on parameters with dim ≥ 2, 0.0 on the rest
    (biases, LayerNorm); a tied parameter appears once."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]


def count(model: nn.Module) -> tuple[int, int]:
    """(tensors, parameters) of ``model``, a tied parameter counted once."""
    params = list(model.parameters())
    return len(params), sum(p.numel() for p in params)


# -- presets -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Preset:
    """A named model with the batch it trains on and how many iterations suit it.

    ``build()`` makes the model (on the current default device: ``torch.device("meta")``
    counts without allocating); ``batch(model, generator)`` draws one (x, y).
    """

    name: str
    build: Callable[[], nn.Module]
    batch: Callable[[nn.Module, torch.Generator], tuple[Tensor, Tensor]]
    iters: int = 30
    warmup: int = 5


def token_batch(batch: int, seq: int) -> Callable[[nn.Module, torch.Generator], tuple[Tensor, Tensor]]:
    """Random tokens x and next tokens y, ``batch`` sequences of ``seq`` (≤ the context)."""

    def draw(model: nn.Module, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        assert isinstance(model, GPT) and seq <= model.config.context
        tokens = torch.randint(model.config.vocab, (batch, seq + 1), generator=generator)
        return tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()

    return draw


def feature_batch(batch: int) -> Callable[[nn.Module, torch.Generator], tuple[Tensor, Tensor]]:
    """Gaussian features x and random classes y, ``batch`` rows."""

    def draw(model: nn.Module, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        assert isinstance(model, ResidualMLP)
        x = torch.randn(batch, model.inputs, generator=generator)
        return x, torch.randint(model.classes, (batch,), generator=generator)

    return draw


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        # 28 tensors, 0.11M parameters
        Preset("gpt-2x64", lambda: GPT(GPTConfig(2, 64, 4, vocab=256, context=64)), token_batch(8, 64)),
        # 76 tensors, 10.7M parameters: nanoGPT's Shakespeare-character model (vocab 65), context 128
        Preset("gpt-6x384", lambda: GPT(GPTConfig(6, 384, 6, vocab=65, context=128)), token_batch(2, 128)),
        # 604 tensors, 0.64M parameters
        Preset("resmlp-150", lambda: ResidualMLP(150), feature_batch(256)),
        # 148 tensors, 124M parameters; a short batch (1 × 64 tokens) so an iteration takes seconds
        Preset(
            "gpt2-small",
            lambda: GPT(GPTConfig(12, 768, 12, vocab=50257, context=1024)),
            token_batch(1, 64),
            iters=5,
            warmup=2,
        ),
    ]
}
