"""sgdwalk: measure how SGD walks the loss landscape, and check the paper's claims as tests.

The public surface is re-exported here from one-idea modules; see ``__all__``.
"""

import importlib as _importlib
from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

# Public name -> module. Imported on first use (PEP 562), so that loading the pytest plugin
# or `sgdwalk --help` does not pay for importing torch.
_EXPORTS: dict[str, str] = {
    "BATCHNORM_MODES": "sgdwalk.batchnorm",
    "BatchNormMode": "sgdwalk.batchnorm",
    "DEFAULT_NUM_ALPHAS": "sgdwalk.segment",
    "MeasurementSchedule": "sgdwalk.schedule",
    "MeasurementSet": "sgdwalk.measurement",
    "NoisyGD": "sgdwalk.optim",
    "ParameterLayout": "sgdwalk.measurement",
    "RECORD_FIELDS": "sgdwalk.record",
    "SegmentSummary": "sgdwalk.segment",
    "StepRecord": "sgdwalk.record",
    "WalkTracker": "sgdwalk.tracker",
    "alpha_grid": "sgdwalk.segment",
    "cosine": "sgdwalk.geometry",
    "distance": "sgdwalk.geometry",
    "epoch_windows": "sgdwalk.schedule",
    "every_kth": "sgdwalk.schedule",
    "every_step": "sgdwalk.schedule",
    "flat_gradient": "sgdwalk.geometry",
    "flat_parameters": "sgdwalk.geometry",
    "full_batch_gradient_": "sgdwalk.optim",
    "gradient_coordinate_variance": "sgdwalk.optim",
    "hessian_vector_product_operator": "sgdwalk.sharpness",
    "isotropic_noise_variance": "sgdwalk.optim",
    "losses_at_points": "sgdwalk.measurement",
    "norm": "sgdwalk.geometry",
    "outputs_are_losses": "sgdwalk.measurement",
    "per_sample_cross_entropy": "sgdwalk.measurement",
    "segment_losses": "sgdwalk.measurement",
    "summarize_segment": "sgdwalk.segment",
    "top_hessian_eigenvalue": "sgdwalk.sharpness",
    "windows": "sgdwalk.schedule",
}


if _TYPE_CHECKING:
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


def __getattr__(name: str) -> _Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'sgdwalk' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


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
