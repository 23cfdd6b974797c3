"""sgdwalk: measure how SGD walks the loss landscape, and check the paper's claims as tests.

The public surface is re-exported here from one-idea modules; see ``__all__``.
"""

import importlib as _importlib
from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

if _TYPE_CHECKING:
    # The one list of the public surface. Type checkers (their users' too: py.typed) read it
    # as it is; at run time _EXPORTS is read from it and each name is imported on first use
    # (PEP 562), so that loading the pytest plugin or `sgdwalk --help` does not pay for
    # importing torch. `X as X` marks an explicit re-export (PEP 484), which mypy's
    # --no-implicit-reexport asks for.
    from sgdwalk.base.errors import SgdwalkError as SgdwalkError
    from sgdwalk.instrument.batchnorm import BATCHNORM_MODES as BATCHNORM_MODES
    from sgdwalk.instrument.batchnorm import BatchNormMode as BatchNormMode
    from sgdwalk.instrument.distributed import Shard as Shard
    from sgdwalk.instrument.geometry import cosine as cosine
    from sgdwalk.instrument.geometry import distance as distance
    from sgdwalk.instrument.geometry import flat_gradient as flat_gradient
    from sgdwalk.instrument.geometry import flat_parameters as flat_parameters
    from sgdwalk.instrument.geometry import norm as norm
    from sgdwalk.instrument.measurement import MeasurementSet as MeasurementSet
    from sgdwalk.instrument.measurement import ParameterLayout as ParameterLayout
    from sgdwalk.instrument.measurement import losses_at_points as losses_at_points
    from sgdwalk.instrument.measurement import outputs_are_losses as outputs_are_losses
    from sgdwalk.instrument.measurement import per_sample_cross_entropy as per_sample_cross_entropy
    from sgdwalk.instrument.measurement import segment_losses as segment_losses
    from sgdwalk.instrument.record import RECORD_FIELDS as RECORD_FIELDS
    from sgdwalk.instrument.record import StepRecord as StepRecord
    from sgdwalk.instrument.sampling import PrecisionTarget as PrecisionTarget
    from sgdwalk.instrument.schedule import MeasurementSchedule as MeasurementSchedule
    from sgdwalk.instrument.schedule import epoch_windows as epoch_windows
    from sgdwalk.instrument.schedule import every_kth as every_kth
    from sgdwalk.instrument.schedule import every_step as every_step
    from sgdwalk.instrument.schedule import windows as windows
    from sgdwalk.instrument.segment import DEFAULT_NUM_ALPHAS as DEFAULT_NUM_ALPHAS
    from sgdwalk.instrument.segment import SegmentSummary as SegmentSummary
    from sgdwalk.instrument.segment import alpha_grid as alpha_grid
    from sgdwalk.instrument.segment import summarize_segment as summarize_segment
    from sgdwalk.instrument.sharpness import hessian_vector_product_operator as hessian_vector_product_operator
    from sgdwalk.instrument.sharpness import top_hessian_eigenvalue as top_hessian_eigenvalue
    from sgdwalk.instrument.tracker import WalkTracker as WalkTracker
    from sgdwalk.integrations.csv_sink import CsvSink as CsvSink
    from sgdwalk.integrations.huggingface_callback import HuggingFaceWalkCallback as HuggingFaceWalkCallback
    from sgdwalk.integrations.lightning_callback import LightningWalkCallback as LightningWalkCallback
    from sgdwalk.integrations.metrics import MetricsSink as MetricsSink
    from sgdwalk.integrations.metrics import flat_metrics as flat_metrics
    from sgdwalk.integrations.mlflow_sink import MlflowSink as MlflowSink
    from sgdwalk.integrations.tensorboard_sink import TensorBoardSink as TensorBoardSink
    from sgdwalk.runs.run_directory_sink import RunDirectorySink as RunDirectorySink
    from sgdwalk.runs.runlog import load_run as load_run
    from sgdwalk.runs.runner import run_walk as run_walk
    from sgdwalk.training.config import WalkConfig as WalkConfig
    from sgdwalk.training.optim import NoisyGD as NoisyGD
    from sgdwalk.training.optim import full_batch_gradient_ as full_batch_gradient_
    from sgdwalk.training.optim import gradient_coordinate_variance as gradient_coordinate_variance
    from sgdwalk.training.optim import isotropic_noise_variance as isotropic_noise_variance


def _public_imports() -> dict[str, str]:
    """Public name -> module, as the ``if _TYPE_CHECKING:`` block above imports them."""
    import ast

    with open(__file__, encoding="utf-8") as source:
        tree = ast.parse(source.read())
    (block,) = (node for node in tree.body if isinstance(node, ast.If) and ast.unparse(node.test) == "_TYPE_CHECKING")
    return {
        alias.asname or alias.name: str(statement.module)
        for statement in block.body
        if isinstance(statement, ast.ImportFrom)
        for alias in statement.names
    }


_EXPORTS: dict[str, str] = _public_imports()

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
    return list(__all__)


__all__ = sorted([*_EXPORTS, "__version__"])
