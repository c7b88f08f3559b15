"""The lazy sparse path (``sparse = "lazy"``) and SparseAdam, its torch drop-in: a step
moves only the entries a sparse gradient holds, their state included."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch

import momenta
from momenta.rules import Gradient, One, TrustRatio


def _embedding_steps(cls, steps=4, **kwargs):
    """An nn.Embedding(sparse=True) trained by ``cls``: batches repeat rows, rows 8 and 9
    are never looked up."""
    torch.manual_seed(0)
    emb = torch.nn.Embedding(10, 3, sparse=True).double()
    opt = cls(emb.parameters(), **kwargs)
    before = emb.weight.detach().clone()
    for step in range(steps):
        ids = torch.tensor([[step % 4, 2, 2], [5, step % 8, 0]])
        opt.zero_grad()
        (emb(ids).sin().sum() * (1 + step)).backward()
        opt.step()
    return emb.weight.detach().clone(), before, opt


@pytest.mark.parametrize("kwargs", [{}, {"lr": 0.01, "maximize": True}, {"betas": (0.5, 0.9), "eps": 1e-3}])
def test_sparse_adam_trains_an_embedding_as_torch(kwargs):
    expected, before, torch_opt = _embedding_steps(torch.optim.SparseAdam, **kwargs)
    actual, _, momenta_opt = _embedding_steps(momenta.SparseAdam, **kwargs)
    torch.testing.assert_close(actual, expected, rtol=1e-12, atol=0)
    assert torch.equal(actual[8:], before[8:])  # rows never looked up never move
    sa, se = momenta_opt.state_dict(), torch_opt.state_dict()
    assert sa["param_groups"] == se["param_groups"]
    assert type(sa["state"][0]["step"]) is int and sa["state"][0]["step"] == se["state"][0]["step"] == 4
    for key in ("exp_avg", "exp_avg_sq"):
        torch.testing.assert_close(sa["state"][0][key], se["state"][0][key], rtol=1e-12, atol=0)
        assert not sa["state"][0][key][8:].any()  # nor does their state


def test_sparse_adam_empty_gradient_counts_the_step_and_moves_nothing():
    for cls in (torch.optim.SparseAdam, momenta.SparseAdam):
        p = torch.randn(4, 2, requires_grad=True)
        before = p.detach().clone()
        opt = cls([p])
        p.grad = torch.sparse_coo_tensor(torch.empty(1, 0, dtype=torch.long), torch.empty(0, 2), (4, 2))
        opt.step()
        assert torch.equal(p, before) and opt.state[p]["step"] == 1


def test_sparse_adam_refuses_dense_gradients_before_changing_anything():
    messages = []
    for cls in (torch.optim.SparseAdam, momenta.SparseAdam):
        p = torch.randn(4, 2, requires_grad=True)
        p.grad = torch.ones(4, 2)
        with pytest.raises(RuntimeError) as error:
            cls([p]).step()
        messages.append(str(error.value))
    assert messages[0] == messages[1] == "SparseAdam does not support dense gradients, please consider Adam instead"
    sparse, dense = torch.randn(4, 2, requires_grad=True), torch.randn(3, requires_grad=True)
    sparse.grad = torch.sparse_coo_tensor([[1]], torch.ones(1, 2), (4, 2))
    dense.grad = torch.ones(3)
    before = sparse.detach().clone()
    opt = momenta.SparseAdam([{"params": [sparse]}, {"params": [dense]}])
    with pytest.raises(RuntimeError, match="does not support dense gradients"):
        opt.step()
    assert torch.equal(sparse, before) and not opt.state  # the first group did not step either


def test_sparse_adam_constructor_as_torch():
    def make(cls, params):
        try:
            return cls(params).state_dict()["param_groups"]
        except (ValueError, TypeError) as error:
            return type(error), str(error)

    sparse = torch.zeros(3, layout=torch.sparse_coo)
    cases = [
        lambda: (torch.randn(2, 2, requires_grad=True) for _ in range(2)),  # a generator
        lambda: iter([torch.randn(2, requires_grad=True), sparse]),
        lambda: [{"params": [torch.randn(2, requires_grad=True)]}, {"params": [sparse], "lr": 0.1}],
        lambda: [torch.randn(2, dtype=torch.complex64, requires_grad=True)],
    ]
    for params in cases:
        assert make(momenta.SparseAdam, params()) == make(torch.optim.SparseAdam, params())


def test_sparse_adam_keeps_an_int_step_through_deepcopy_pickle_and_torch():
    p = torch.randn(5, 2, dtype=torch.float64, requires_grad=True)
    opt = momenta.SparseAdam([p], lr=0.1)
    p.grad = torch.sparse_coo_tensor([[0, 3]], torch.ones(2, 2, dtype=torch.float64), (5, 2))
    opt.step()
    for clone in (copy.deepcopy(opt), pickle.loads(pickle.dumps(opt))):
        assert next(iter(clone.state.values()))["step"] == 1
        assert type(next(iter(clone.state.values()))["step"]) is int
    theirs = torch.optim.SparseAdam([p.detach().clone().requires_grad_()], lr=0.1)
    theirs.load_state_dict(opt.state_dict())
    ours = momenta.SparseAdam([p.detach().clone().requires_grad_()], lr=0.1)
    ours.load_state_dict(theirs.state_dict())
    assert type(ours.state_dict()["state"][0]["step"]) is int


class LazyAdam(momenta.Adam):
    """Any elementwise optimizer takes the lazy path by saying so."""

    sparse = "lazy"
    sparse_error = None


def test_lazy_step_is_the_dense_step_of_the_gathered_entries():
    """Rows 1, 3 (twice: summed) and 7 step exactly as a parameter made of those rows
    alone would under the dense step; every other row and its state stay as they were."""
    torch.manual_seed(0)
    p = torch.randn(10, 4, dtype=torch.float64, requires_grad=True)
    small = p.detach()[[1, 3, 7]].clone().requires_grad_()
    lazy, dense = LazyAdam([p], lr=0.1, weight_decay=0.1), momenta.Adam([small], lr=0.1, weight_decay=0.1)
    before = p.detach().clone()
    for step in range(3):
        values = torch.randn(4, 4, dtype=torch.float64)
        p.grad = torch.sparse_coo_tensor([[1, 3, 7, 3]], values, (10, 4))
        small.grad = torch.stack([values[0], values[1] + values[3], values[2]])
        lazy.step()
        dense.step()
    rows = [1, 3, 7]
    torch.testing.assert_close(p.detach()[rows], small.detach(), rtol=1e-15, atol=0)
    others = [i for i in range(10) if i not in rows]
    assert torch.equal(p.detach()[others], before[others])
    for key in ("exp_avg", "exp_avg_sq"):
        torch.testing.assert_close(lazy.state[p][key][rows], dense.state[small][key], rtol=1e-15, atol=0)
        assert not lazy.state[p][key][others].any()


def test_lazy_path_refuses_rules_that_are_not_elementwise():
    class LazyLARS(momenta.Optimizer):
        sparse = "lazy"
        sparse_error = None

        def __init__(self, params):
            super().__init__(params, dict(lr=0.1))

        def rules(self, group):
            return momenta.Rules(Gradient(), One(), direction=TrustRatio())

    p = torch.randn(4, 2, requires_grad=True)
    p.grad = torch.sparse_coo_tensor([[1]], torch.ones(1, 2), (4, 2))
    with pytest.raises(ValueError, match="lazy sparse step needs elementwise rules"):
        LazyLARS([p]).step()


def test_lazy_path_is_opt_in():
    """Optimizers that accept sparse gradients without ``sparse = "lazy"`` densify them
    and step every entry (torch's SGD, Adagrad)."""
    assert momenta.Optimizer.sparse == "dense" and momenta.Adagrad.sparse == "dense"
    assert momenta.SparseAdam.sparse == "lazy"
