"""sgdwalk: measure how SGD walks the loss landscape, and check the paper's claims as tests.

The public surface is re-exported here from one-idea modules; see ``__all__``.
"""

import importlib as _importlib
from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

# Public name -> module. Imported on first use (PEP 562), so that loading the pytest plugin
# or `sgdwalk --help` does not pay for importing torch.
_EXPORTS: dict[str, str] = {
    "BATCHNORM_MODES": "sgdwalk.instrument.batchnorm",
    "BatchNormMode": "sgdwalk.instrument.batchnorm",
    "CsvSink": "sgdwalk.integrations.csv_sink",
    "DEFAULT_NUM_ALPHAS": "sgdwalk.instrument.segment",
    "LightningWalkCallback": "sgdwalk.integrations.lightning_callback",
    "MeasurementSchedule": "sgdwalk.instrument.schedule",
    "MeasurementSet": "sgdwalk.instrument.measurement",
    "MetricsSink": "sgdwalk.integrations.metrics",
    "MlflowSink": "sgdwalk.integrations.mlflow_sink",
    "NoisyGD": "sgdwalk.training.optim",
    "ParameterLayout": "sgdwalk.instrument.measurement",
    "PrecisionTarget": "sgdwalk.instrument.sampling",
    "RECORD_FIELDS": "sgdwalk.instrument.record",
    "SegmentSummary": "sgdwalk.instrument.segment",
    "Shard": "sgdwalk.instrument.distributed",
    "SgdwalkError": "sgdwalk.base.errors",
    "StepRecord": "sgdwalk.instrument.record",
    "TensorBoardSink": "sgdwalk.integrations.tensorboard_sink",
    "WalkTracker": "sgdwalk.instrument.tracker",
    "alpha_grid": "sgdwalk.instrument.segment",
    "cosine": "sgdwalk.instrument.geometry",
    "distance": "sgdwalk.instrument.geometry",
    "epoch_windows": "sgdwalk.instrument.schedule",
    "every_kth": "sgdwalk.instrument.schedule",
    "every_step": "sgdwalk.instrument.schedule",
    "flat_gradient": "sgdwalk.instrument.geometry",
    "flat_metrics": "sgdwalk.integrations.metrics",
    "flat_parameters": "sgdwalk.instrument.geometry",
    "full_batch_gradient_": "sgdwalk.training.optim",
    "gradient_coordinate_variance": "sgdwalk.training.optim",
    "hessian_vector_product_operator": "sgdwalk.instrument.sharpness",
    "isotropic_noise_variance": "sgdwalk.training.optim",
    "losses_at_points": "sgdwalk.instrument.measurement",
    "norm": "sgdwalk.instrument.geometry",
    "outputs_are_losses": "sgdwalk.instrument.measurement",
    "per_sample_cross_entropy": "sgdwalk.instrument.measurement",
    "segment_losses": "sgdwalk.instrument.measurement",
    "summarize_segment": "sgdwalk.instrument.segment",
    "top_hessian_eigenvalue": "sgdwalk.instrument.sharpness",
    "windows": "sgdwalk.instrument.schedule",
}


if _TYPE_CHECKING:
    from sgdwalk.base.errors import SgdwalkError
    from sgdwalk.instrument.batchnorm import BATCHNORM_MODES, BatchNormMode
    from sgdwalk.instrument.distributed import Shard
    from sgdwalk.instrument.geometry import cosine, distance, flat_gradient, flat_parameters, norm
    from sgdwalk.instrument.measurement import (
        MeasurementSet,
        ParameterLayout,
        losses_at_points,
        outputs_are_losses,
        per_sample_cross_entropy,
        segment_losses,
    )
    from sgdwalk.instrument.record import RECORD_FIELDS, StepRecord
    from sgdwalk.instrument.sampling import PrecisionTarget
    from sgdwalk.instrument.schedule import MeasurementSchedule, epoch_windows, every_kth, every_step, windows
    from sgdwalk.instrument.segment import DEFAULT_NUM_ALPHAS, SegmentSummary, alpha_grid, summarize_segment
    from sgdwalk.instrument.sharpness import hessian_vector_product_operator, top_hessian_eigenvalue
    from sgdwalk.instrument.tracker import WalkTracker
    from sgdwalk.integrations.csv_sink import CsvSink
    from sgdwalk.integrations.lightning_callback import LightningWalkCallback
    from sgdwalk.integrations.metrics import MetricsSink, flat_metrics
    from sgdwalk.integrations.mlflow_sink import MlflowSink
    from sgdwalk.integrations.tensorboard_sink import TensorBoardSink
    from sgdwalk.training.optim import (
        NoisyGD,
        full_batch_gradient_,
        gradient_coordinate_variance,
        isotropic_noise_variance,
    )


# Annotated, not assigned: the value comes from __getattr__ below on first use.
__version__: str


def __getattr__(name: str) -> _Any:
    if name == "__version__":
        # The one version number is pyproject.toml's, read from the installed distribution's
        # metadata on first use (importlib.metadata costs more to import than this package).
        value: _Any = _importlib.import_module("importlib.metadata").version("sgdwalk")
        globals()[name] = value
        return value
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'sgdwalk' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "BATCHNORM_MODES",
    "BatchNormMode",
    "CsvSink",
    "DEFAULT_NUM_ALPHAS",
    "LightningWalkCallback",
    "MeasurementSchedule",
    "MeasurementSet",
    "MetricsSink",
    "MlflowSink",
    "NoisyGD",
    "ParameterLayout",
    "PrecisionTarget",
    "RECORD_FIELDS",
    "SegmentSummary",
    "SgdwalkError",
    "Shard",
    "StepRecord",
    "TensorBoardSink",
    "WalkTracker",
    "__version__",
    "alpha_grid",
    "cosine",
    "distance",
    "epoch_windows",
    "every_kth",
    "every_step",
    "flat_gradient",
    "flat_metrics",
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
