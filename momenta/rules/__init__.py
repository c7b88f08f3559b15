"""Moment rules: ``m_t`` over the gradients, ``V_t`` over the squared gradients.

See :mod:`momenta.rules.base` for what a rule is, :mod:`momenta.rules.first` and
:mod:`momenta.rules.second` for the built-in ones.
"""

from .base import FirstMoment, Rule, Scalar, SecondMoment, State, Updates
from .first import EMA, Gradient, Momentum
from .second import AMSGrad, EMASq, One, SumSq

__all__ = [
    "AMSGrad",
    "EMA",
    "EMASq",
    "FirstMoment",
    "Gradient",
    "Momentum",
    "One",
    "Rule",
    "Scalar",
    "SecondMoment",
    "State",
    "SumSq",
    "Updates",
]
