"""The public surface: ``sgdwalk.__all__`` is exactly the names below, and each one imports.

Changing the public API means changing this list, deliberately (as optax's API test does).
"""

from __future__ import annotations

import importlib
import types

import pytest

import sgdwalk

PUBLIC_NAMES = {
    "CsvSink",
    "LightningWalkCallback",
    "MetricsSink",
    "MlflowSink",
    "TensorBoardSink",
    "flat_metrics",
    "BATCHNORM_MODES",
    "BatchNormMode",
    "DEFAULT_NUM_ALPHAS",
    "MeasurementSchedule",
    "MeasurementSet",
    "NoisyGD",
    "ParameterLayout",
    "PrecisionTarget",
    "RECORD_FIELDS",
    "SegmentSummary",
    "SgdwalkError",
    "Shard",
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
}


def test_all_is_exactly_the_public_names() -> None:
    assert set(sgdwalk.__all__) == PUBLIC_NAMES
    assert len(sgdwalk.__all__) == len(set(sgdwalk.__all__)), "duplicates in __all__"
    assert list(sgdwalk.__all__) == sorted(sgdwalk.__all__), "keep __all__ sorted"


@pytest.mark.parametrize("name", sorted(PUBLIC_NAMES))
def test_each_public_name_imports(name: str) -> None:
    namespace: dict[str, object] = {}
    exec(f"from sgdwalk import {name}", namespace)
    value = namespace[name]
    assert value is getattr(sgdwalk, name)
    if isinstance(value, (type, types.FunctionType)):
        # Re-exported from a one-idea module, not defined in the package's __init__.
        assert value.__module__.startswith("sgdwalk.") and value.__module__ != "sgdwalk"


def test_no_public_name_outside_all() -> None:
    for name in PUBLIC_NAMES:
        getattr(sgdwalk, name)  # load every lazy export first, so the namespace is complete
    leaked = {
        name
        for name, value in vars(sgdwalk).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    } - PUBLIC_NAMES
    assert not leaked, f"public names missing from __all__: {sorted(leaked)}"


def test_unknown_name_is_a_clear_attribute_error() -> None:
    with pytest.raises(AttributeError, match="module 'sgdwalk' has no attribute 'WalkTraker'"):
        getattr(sgdwalk, "WalkTraker")  # noqa: B009 (the attribute access is the test)
    with pytest.raises(ImportError, match="WalkTraker"):
        exec("from sgdwalk import WalkTraker", {})


def test_star_import_gives_all_and_nothing_else() -> None:
    namespace: dict[str, object] = {}
    exec("from sgdwalk import *", namespace)
    assert set(namespace) - {"__builtins__"} == PUBLIC_NAMES


def test_submodules_import_on_their_own() -> None:
    # Every module of the package imports alone, in any order (no hidden import cycles).
    import pkgutil

    names = [info.name for info in pkgutil.walk_packages(sgdwalk.__path__, prefix="sgdwalk.")]
    assert "sgdwalk.instrument.tracker" in names
    for name in names:
        if name.endswith("pytest_plugin"):
            continue  # imported by pytest itself at start-up
        assert importlib.import_module(name).__name__ == name
