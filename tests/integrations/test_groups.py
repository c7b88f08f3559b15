"""Param groups from rules: nanoGPT's split, lr multipliers, Muon's split, the summary, and
the refusals; groups used by torch.optim and momenta alike give the same numbers."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

import momenta
from momenta.bench.models import param_groups as nanogpt_groups
from momenta.integrations import NORMS, dims, muon_rules, param_groups, rule, weight_decay_rules

from .common import CLOSE, assert_same_params, batch, tiny_gpt


def ids(params) -> set[int]:
    return {id(p) for p in params}


def test_weight_decay_rules_are_nanogpts_split():
    model = tiny_gpt()
    groups = param_groups(model, weight_decay_rules(0.1))
    expected = nanogpt_groups(model, 0.1)  # decay: dim >= 2; no decay: the rest
    assert [r.name for r in groups.rules] == ["no_decay", "decay"]
    assert ids(groups[1]["params"]) == ids(expected[0]["params"]) and groups[1]["weight_decay"] == 0.1
    assert ids(groups[0]["params"]) == ids(expected[1]["params"]) and groups[0]["weight_decay"] == 0.0
    # the tied wte/lm_head weight is one parameter, in one group, once
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters())) == 28
    assert groups.group_of("wte.weight") == "decay"
    assert groups.group_of("blocks.0.ln_1.weight") == "no_decay"
    assert groups.group_of("blocks.1.mlp.0.bias") == "no_decay"


def test_groups_train_the_same_with_torch_and_momenta():
    """Plain dicts: torch.optim.AdamW and momenta.AdamW take them and agree."""
    runs = []
    for cls in (torch.optim.AdamW, momenta.AdamW):
        model = tiny_gpt(dtype=torch.float64)
        opt = cls(param_groups(model, weight_decay_rules(0.1), lr=3e-3), lr=1.0)  # every group sets lr
        for i in range(3):
            model(*batch(i)).backward()
            opt.step()
            opt.zero_grad()
        runs.append(model)
    assert_same_params(*runs, **CLOSE)
    assert runs[0].wte.weight.grad is None  # it trained: zero_grad ran, and values moved
    assert not torch.equal(runs[0].wte.weight, tiny_gpt(dtype=torch.float64).wte.weight)


def test_lr_multipliers_and_the_summary():
    model = tiny_gpt()
    rules = weight_decay_rules(
        0.1,
        no_decay=(dims(max=1), *NORMS, nn.Embedding),
        extra=[rule("embeddings", nn.Embedding, weight_decay=0.0, lr_scale=0.1)],
    )
    groups = param_groups(model, rules, lr=1e-3)
    by_name = {r.name: g for r, g in zip(groups.rules, groups)}
    assert by_name["embeddings"]["lr"] == pytest.approx(1e-4)
    assert by_name["decay"]["lr"] == by_name["no_decay"]["lr"] == 1e-3
    assert ids(by_name["embeddings"]["params"]) == ids([model.wte.weight, model.wpe.weight])
    summary = groups.summary()
    assert "embeddings: 2 tensors" in summary and "wte.weight" in summary and "wpe.weight" in summary
    assert f"lr={1e-3 * 0.1!r}" in lines_of(summary, "embeddings")
    lines = summary.splitlines()
    assert lines[0].startswith("embeddings:") and lines[1].startswith("no_decay:") and lines[2].startswith("decay:")
    # every trainable parameter is counted in exactly one line
    counted = sum(int(re.search(r": (\d+) tensors", line).group(1)) for line in lines[:3])
    assert counted == 28


def lines_of(summary: str, rule_name: str) -> str:
    return next(line for line in summary.splitlines() if line.startswith(rule_name + ":"))


def test_patterns_regex_callable_and_frozen():
    model = tiny_gpt()
    model.wpe.weight.requires_grad_(False)
    rules = [
        rule("attention", re.compile(r"\.attn\."), lr_scale=2.0),
        rule("mlp_out", lambda name, p: name.endswith("mlp.2.weight")),
        rule("rest"),
    ]
    groups = param_groups(model, rules, lr=0.5)
    assert groups.frozen == ["wpe.weight"]
    assert "frozen (left out): 1 tensors: wpe.weight" in groups.summary()
    assert groups.names[0] == [f"blocks.{b}.attn.{n}.{w}" for b in (0, 1) for n in ("c_attn", "c_proj") for w in ("weight", "bias")]
    assert groups[0]["lr"] == 1.0 and groups[1]["lr"] == groups[2]["lr"] == 0.5
    assert groups.names[1] == ["blocks.0.mlp.2.weight", "blocks.1.mlp.2.weight"]
    assert all(not n.startswith("wpe") for names in groups.names for n in names)


def test_muon_split_matches_torch_muon_and_adamw():
    """muon_rules: hidden matrices to Muon, embeddings (the tied head too) and vectors to
    AdamW; momenta.MuonWithAdamW over those groups gives torch.optim.Muon + AdamW's numbers."""
    adamw = dict(lr=3e-3, betas=(0.9, 0.95), eps=1e-10, weight_decay=0.0)
    model = tiny_gpt(dtype=torch.float64)
    groups = param_groups(model, muon_rules(adamw=adamw))
    muon, rest = groups
    assert all(p.dim() == 2 for p in muon["params"]) and muon["muon"] is True
    assert ids(muon["params"]).isdisjoint(ids([model.wte.weight, model.wpe.weight]))
    assert len(muon["params"]) == 8  # c_attn, c_proj, mlp.0, mlp.2 of two blocks
    assert rest["muon"] is False and rest["lr"] == 3e-3

    ours = momenta.MuonWithAdamW(groups, lr=0.02, weight_decay=0.0)
    theirs_model = tiny_gpt(dtype=torch.float64)
    theirs_groups = param_groups(theirs_model, muon_rules(adamw=adamw))
    theirs = [
        torch.optim.Muon([theirs_groups[0]], lr=0.02, weight_decay=0.0),
        torch.optim.AdamW([theirs_groups[1]]),
    ]
    for i in range(3):
        model(*batch(i)).backward()
        theirs_model(*batch(i)).backward()
        ours.step()
        ours.zero_grad()
        for opt in theirs:
            opt.step()
            opt.zero_grad()
    assert_same_params(model, theirs_model, **CLOSE)


def test_claimed_twice_is_refused_with_names():
    model = tiny_gpt()
    rules = [rule("embeddings", nn.Embedding), rule("head", "lm_head.*", lr_scale=0.5), rule("rest")]
    with pytest.raises(ValueError, match=r"claimed by two rules: wte\.weight \(= lm_head\.weight\) by \['embeddings', 'head'\]"):
        param_groups(model, rules, lr=1e-3)


def test_unclaimed_is_refused_unless_a_rest_rule():
    model = tiny_gpt()
    with pytest.raises(ValueError, match=r"no rule claims: .*wte\.weight.*rule\('rest'"):
        param_groups(model, [rule("vectors", dims(max=1))])
    groups = param_groups(model, [rule("vectors", dims(max=1)), rule("matrices", weight_decay=0.1)])
    assert len(groups) == 2


@pytest.mark.parametrize(
    "build, error, message",
    [
        (lambda: rule("x", 3), TypeError, r"rule 'x', match: unknown pattern 3 of type int"),
        (lambda: rule("x", exclude=[b"bias"]), TypeError, r"rule 'x', exclude: unknown pattern b'bias'"),
        (lambda: rule("x", int), TypeError, r"rule 'x', match: <class 'int'> is a class but not an nn.Module"),
        (lambda: rule("x", "*", lr_scale=-1.0), ValueError, r"rule 'x': invalid lr_scale: -1.0"),
        (lambda: rule("x", "*", lr_scale=float("nan")), ValueError, r"invalid lr_scale: nan"),
        (lambda: rule("x", "*", lr=1.0, lr_scale=2.0), ValueError, r"give lr or lr_scale, not both"),
        (lambda: rule("", "*"), ValueError, r"rule: invalid name: ''"),
        (lambda: dims(-1), ValueError, r"dims: invalid min: -1"),
        (lambda: dims(3, 2), ValueError, r"dims: invalid range: min=3 > max=2"),
        (lambda: param_groups(tiny_gpt(), [rule("a"), rule("b")]), ValueError, r"at most one rule without patterns.*'a', 'b'"),
        (lambda: param_groups(tiny_gpt(), [rule("a", "*"), rule("a")]), ValueError, r"repeated: \['a'\]"),
        (lambda: param_groups(tiny_gpt(), [rule("a", "*", lr_scale=2.0)]), ValueError, r"rules \['a'\] scale the lr, but no lr"),
        (lambda: param_groups(tiny_gpt(), [rule("a")], lr=-1.0), ValueError, r"invalid lr: -1.0"),
        (lambda: param_groups(tiny_gpt(), ["*.bias"]), TypeError, r"rules\[0\] is '\*\.bias', not a Rule"),
    ],
)
def test_bad_input_names_the_argument_and_value(build, error, message):
    with pytest.raises(error, match=message):
        build()
