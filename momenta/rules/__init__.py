"""Rules: the parts an optimizer is made of.

* :mod:`momenta.rules.first` — ``m_t``, over the gradients;
* :mod:`momenta.rules.second` — ``V_t``, over the squared gradients, and its root;
* :mod:`momenta.rules.direction` — what the direction ``m̂ / (√V̂ + ε)`` becomes;
* :mod:`momenta.rules.iterate` — how the direction moves the weights.

See :mod:`momenta.rules.base` for what a rule is.
"""

from .base import (
    Direction,
    FirstMoment,
    Iterate,
    Rule,
    Scalar,
    SecondMoment,
    State,
    Updates,
)
from .direction import ClipRMS, Identity, LocalLR, Orthogonalize, Sign, TrustRatio
from .first import (
    EMA,
    Corrected,
    Delta,
    EMAMix,
    Gradient,
    Initialized,
    Interpolated,
    Momentum,
    NesterovEMA,
    Resilient,
)
from .iterate import (
    Averaged,
    Descent,
    RelativeStep,
    RelativeUpdate,
    ScheduleFree,
    ShapeScaled,
    Unscaled,
)
from .second import (
    AMSGrad,
    BeliefSq,
    EMASq,
    Factored,
    FactoredPaper,
    InfNorm,
    One,
    Rectified,
    SumSq,
    YogiSq,
)

__all__ = [
    "AMSGrad",
    "Averaged",
    "BeliefSq",
    "ClipRMS",
    "Corrected",
    "Delta",
    "Descent",
    "Direction",
    "EMA",
    "EMAMix",
    "EMASq",
    "Factored",
    "FactoredPaper",
    "FirstMoment",
    "Gradient",
    "Identity",
    "InfNorm",
    "Initialized",
    "Interpolated",
    "Iterate",
    "LocalLR",
    "Momentum",
    "NesterovEMA",
    "One",
    "Orthogonalize",
    "Rectified",
    "RelativeStep",
    "RelativeUpdate",
    "Resilient",
    "Rule",
    "Scalar",
    "ScheduleFree",
    "SecondMoment",
    "ShapeScaled",
    "Sign",
    "State",
    "SumSq",
    "TrustRatio",
    "Unscaled",
    "Updates",
    "YogiSq",
]
