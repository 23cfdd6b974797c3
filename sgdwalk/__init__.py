"""sgdwalk: measure how SGD walks the loss landscape, and check the paper's claims as tests.

The public surface is re-exported here from one-idea modules; see ``__all__``.
"""

from sgdwalk.batchnorm import BATCHNORM_MODES, BatchNormMode
from sgdwalk.geometry import cosine, distance, flat_gradient, flat_parameters, norm
from sgdwalk.measurement import (
    MeasurementSet,
    ParameterLayout,
    losses_at_points,
    outputs_are_losses,
    per_sample_cross_entropy,
    segment_losses,
)
from sgdwalk.optim import NoisyGD, full_batch_gradient_, gradient_coordinate_variance, isotropic_noise_variance
from sgdwalk.record import RECORD_FIELDS, StepRecord
from sgdwalk.schedule import MeasurementSchedule, epoch_windows, every_kth, every_step, windows
from sgdwalk.segment import DEFAULT_NUM_ALPHAS, SegmentSummary, alpha_grid, summarize_segment
from sgdwalk.sharpness import hessian_vector_product_operator, top_hessian_eigenvalue
from sgdwalk.tracker import WalkTracker

__version__ = "0.1.0"

__all__ = [
    "BATCHNORM_MODES",
    "BatchNormMode",
    "DEFAULT_NUM_ALPHAS",
    "MeasurementSchedule",
    "MeasurementSet",
    "NoisyGD",
    "ParameterLayout",
    "RECORD_FIELDS",
    "SegmentSummary",
    "StepRecord",
    "WalkTracker",
    "__version__",
    "alpha_grid",
    "cosine",
    "distance",
    "epoch_windows",
    "every_kth",
    "every_step",
    "flat_gradient",
    "flat_parameters",
    "full_batch_gradient_",
    "gradient_coordinate_variance",
    "hessian_vector_product_operator",
    "isotropic_noise_variance",
    "losses_at_points",
    "norm",
    "outputs_are_losses",
    "per_sample_cross_entropy",
    "segment_losses",
    "summarize_segment",
    "top_hessian_eigenvalue",
    "windows",
]
