"""Config fields added after runs were first hashed: what they accept, and the hashes they keep."""

from __future__ import annotations

import hashlib
import json

import pytest

from sgdwalk.training.config import ConfigError, WalkConfig

ADDED_LATER = (
    "batch_norm",
    "activation",
    "evaluate_every_updates",
    "checkpoint_every_updates",
    "cuda_tf32",
    "measurement_precision",
    "hvp_chunk_size",
    "hessian_trace_every",
    "hessian_trace_probes",
    "gradient_noise_scale_every",
    "top_eigenvalues_every",
    "top_eigenvalues_k",
    "preconditioned_sharpness_every",
    "gradient_noise_batch",
)
WITHOUT_EFFECT = ("data_root", "download", "out_dir", "checkpoint_every_epochs", "progress", "offload")


def hash_without_the_new_fields(config: WalkConfig) -> str:
    """The hash as it was computed before the fields of ``ADDED_LATER`` existed."""
    relevant = {k: v for k, v in config.to_dict().items() if k not in (*WITHOUT_EFFECT, *ADDED_LATER)}
    canonical = json.dumps(relevant, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


@pytest.mark.parametrize("changes", [{}, {"optimizer": "gd", "lr": 0.9}, {"arch": "vgg11", "data": "cifar10"}])
def test_a_run_that_leaves_the_new_fields_alone_keeps_its_hash(changes: dict[str, object]) -> None:
    config = WalkConfig(**changes)  # type: ignore[arg-type]  # keyword values of several types
    assert config.result_hash == hash_without_the_new_fields(config)


@pytest.mark.parametrize(
    "changes",
    [
        {"batch_norm": False},
        {"activation": "tanh"},
        {"evaluate_every_updates": 10},
        {"cuda_tf32": True},
        {"measurement_precision": "bfloat16"},
        {"hvp_chunk_size": 250},
        {"hessian_trace_every": 5},
        {"hessian_trace_probes": 60},
        {"gradient_noise_scale_every": 5, "bn_mode": "eval"},
        {"top_eigenvalues_every": 5},
        {"top_eigenvalues_k": 3},
    ],
)
def test_changing_a_new_field_that_changes_the_records_changes_the_hash(changes: dict[str, object]) -> None:
    assert WalkConfig(**changes).result_hash != WalkConfig().result_hash  # type: ignore[arg-type]


def test_the_checkpoint_cadence_does_not_change_the_hash() -> None:
    assert WalkConfig(checkpoint_every_updates=7).result_hash == WalkConfig().result_hash


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"arch": "vgg11", "batch_norm": False}, "batch_norm and activation can be changed for mlp only"),
        ({"arch": "convnet", "activation": "tanh"}, "batch_norm and activation can be changed for mlp only"),
        ({"activation": "gelu"}, "activation must be one of relu, tanh"),
        ({"batch_norm": "no"}, "batch_norm must be true or false"),
        ({"cuda_tf32": "yes"}, "cuda_tf32 must be true or false"),
        ({"measurement_precision": "float16"}, "measurement_precision must be one of float32, bfloat16"),
        ({"evaluate_every_updates": 0}, "evaluate_every_updates must be positive"),
        ({"hvp_chunk_size": 0}, "hvp_chunk_size must be positive"),
        ({"checkpoint_every_updates": 2.5}, "checkpoint_every_updates must be an integer"),
        ({"hessian_trace_every": 0}, "hessian_trace_every must be positive"),
        ({"hessian_trace_probes": 3}, "hessian_trace_probes must be at least 4"),
        ({"top_eigenvalues_k": 0}, "top_eigenvalues_k must be positive"),
        ({"gradient_noise_scale_every": 5}, "gradient_noise_scale_every needs per-sample gradients"),
        ({"gradient_noise_scale_every": 5, "arch": "vgg11"}, "use bn_mode eval or recompute"),
    ],
)
def test_bad_values_of_the_new_fields_are_refused_by_name(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        WalkConfig(**changes)  # type: ignore[arg-type]


def test_the_gradient_noise_scale_is_allowed_where_every_sample_has_its_own_gradient() -> None:
    assert WalkConfig(gradient_noise_scale_every=5, batch_norm=False).gradient_noise_scale_every == 5
    assert WalkConfig(gradient_noise_scale_every=5, bn_mode="recompute").gradient_noise_scale_every == 5
