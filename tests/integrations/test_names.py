"""Optimizers by name, as configuration files and CLIs give them: every spelling resolves
to the class, ``create`` builds it, unknown names and options are refused by name."""

from __future__ import annotations

import pytest
import torch

import momenta
from momenta import registry
from momenta.integrations import create, resolve


@pytest.mark.parametrize(
    "name, expected",
    [
        ("lion", momenta.Lion),
        ("momenta.AdamW", momenta.AdamW),
        ("AdamW", momenta.AdamW),  # a bare class name is momenta's
        ("Adam", momenta.Adam),  # momenta's drop-in, not the seed's textbook "adam"
        ("adam", momenta.seed.Adam),
        ("LAMB", momenta.LAMB),  # a registered name in any case
        ("MuonWithAdamW", momenta.MuonWithAdamW),
        ("torch:AdamW", torch.optim.AdamW),
        ("torch.optim.SGD", torch.optim.SGD),
        ("momenta.optimizers.Lion", momenta.Lion),  # LightningCLI's class_path, Hydra's _target_
        ("momenta.optimizers.modern:LARS", momenta.LARS),
    ],
)
def test_every_spelling_resolves(name, expected):
    assert resolve(name) is expected


@pytest.mark.parametrize("name", registry.names())
def test_every_registered_name_creates_its_optimizer(name):
    p = torch.nn.Parameter(torch.ones(3, 3))
    opt = create(name, [p], lr=0.01)
    assert type(opt) is registry.get(name).factory
    sparse = name in ("sparseadam", "momenta.SparseAdam")
    p.grad = torch.ones_like(p).to_sparse() if sparse else torch.ones_like(p)
    opt.step()  # it is a working optimizer over p
    assert not torch.equal(p.detach(), torch.ones(3, 3))
    assert opt.param_groups[0]["lr"] == 0.01


def test_create_passes_options_through():
    p = torch.nn.Parameter(torch.ones(2))
    opt = create("momenta.AdamW", [p], lr=1e-3, betas=(0.8, 0.9), weight_decay=0.5)
    assert opt.defaults["betas"] == (0.8, 0.9) and opt.defaults["weight_decay"] == 0.5


@pytest.mark.parametrize(
    "name, suggestion",
    [("lino", "lion"), ("momenta.AdamX", "momenta.Adam"), ("adamw8", "adamw"), ("schedulefre", "schedulefree")],
)
def test_unknown_name_suggests_the_closest(name, suggestion):
    with pytest.raises(registry.UnknownOptimizerError, match=f"Unknown optimizer '{name}'. Did you mean '{suggestion}'"):
        resolve(name)


@pytest.mark.parametrize("name", ["os.path", "torch.nn.Linear", "no.such.module.Class", "momenta.optimizers.modern:Nope"])
def test_an_import_path_to_no_optimizer_is_unknown(name):
    with pytest.raises(registry.UnknownOptimizerError, match="Unknown optimizer"):
        resolve(name)


def test_a_name_must_be_a_string():
    with pytest.raises(TypeError, match="non-empty str, got 3"):
        resolve(3)  # type: ignore[arg-type]


def test_unknown_option_is_refused_by_name_before_building():
    p = torch.nn.Parameter(torch.ones(2))
    with pytest.raises(TypeError, match=r"AdamW \('adamw'\) has no option 'betaz'. Did you mean 'betas'\? Its options: lr, betas"):
        create("adamw", [p], lr=1e-3, betaz=(0.9, 0.99))
    with pytest.raises(TypeError, match=r"Lion \('lion'\) has no option 'momentum'"):
        create("lion", [p], momentum=0.9)
