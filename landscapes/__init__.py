"""Analytic landscapes that carry exact answers, and a walk through sgdwalk's tracker.

Each landscape is an ``nn.Module`` with one float64 parameter ``theta`` whose ``forward``
returns per-sample losses, measured with ``sgdwalk.outputs_are_losses``: to the instrument
it is just another model. Its exact loss, gradient, Hessian, minimizer and closed-form
answers come from numpy, independently of torch and of sgdwalk.
"""

from landscapes.noisy_quadratic import NoisyQuadratic
from landscapes.profile import SegmentProfile
from landscapes.quadratic import Quadratic, QuadraticAnswers, Rotation, SegmentParabola, as_vector, orthogonal_matrix
from landscapes.valley import BarrierAnswer, Bump, Valley
from landscapes.walk import CovarianceNoiseGD, Walk, WalkKind, WalkLandscape, walk

__all__ = [
    "BarrierAnswer",
    "Bump",
    "CovarianceNoiseGD",
    "NoisyQuadratic",
    "Quadratic",
    "QuadraticAnswers",
    "Rotation",
    "SegmentParabola",
    "SegmentProfile",
    "Valley",
    "Walk",
    "WalkKind",
    "WalkLandscape",
    "as_vector",
    "orthogonal_matrix",
    "walk",
]
