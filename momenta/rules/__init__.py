"""Rules: the parts an optimizer is made of.

* :mod:`momenta.rules.first` — ``m_t``, over the gradients;
* :mod:`momenta.rules.second` — ``V_t``, over the squared gradients, and its root;
* :mod:`momenta.rules.direction` — what the direction ``m̂ / (√V̂ + ε)`` becomes;
* :mod:`momenta.rules.iterate` — how the direction moves the weights.

See :mod:`momenta.rules.base` for what a rule is.
"""

from .base import Direction, FirstMoment, Iterate, Rule, Scalar, SecondMoment, State, Updates
from .direction import ClipRMS, Identity, Orthogonalize, Sign, TrustRatio
from .first import EMA, Delta, Gradient, Momentum, NesterovEMA, Resilient
from .iterate import Averaged, Descent, RelativeStep, ScheduleFree, Unscaled
from .second import AMSGrad, EMASq, Factored, InfNorm, One, Rectified, SumSq

__all__ = [
    "AMSGrad",
    "Averaged",
    "ClipRMS",
    "Delta",
    "Descent",
    "Direction",
    "EMA",
    "EMASq",
    "Factored",
    "FirstMoment",
    "Gradient",
    "Identity",
    "InfNorm",
    "Iterate",
    "Momentum",
    "NesterovEMA",
    "One",
    "Orthogonalize",
    "Rectified",
    "RelativeStep",
    "Resilient",
    "Rule",
    "Scalar",
    "ScheduleFree",
    "SecondMoment",
    "Sign",
    "State",
    "SumSq",
    "TrustRatio",
    "Unscaled",
    "Updates",
]
