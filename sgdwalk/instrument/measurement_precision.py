"""The arithmetic of a segment's forward passes: float32 (the default), or bfloat16 autocast.

A measured step costs K + 1 forward passes over the measurement set, so the arithmetic of
those passes sets the cost of the instrument. ``bfloat16`` runs them under
``torch.autocast(device_type, dtype=torch.bfloat16)``: matmuls and convolutions take bf16
inputs (8 bits of mantissa: a relative resolution of 2^-8 per value) and accumulate in
float32; torch's autocast lists keep the losses themselves (cross-entropy) in float32, and
the per-sample losses are cast to float32 whatever the user's loss returns, so every sum
over samples is the same float32/float64 arithmetic as in float32 mode.

Only the segment losses take the setting: the training step, the gradient of the cosine and
the Hessian-vector products of sharpness always run in float32 (``sharpness`` never reads it).

Whether bfloat16 is precise enough is a question of the statistics: its error in heights,
floor depth and barrier excess against float64, as a fraction of their standard errors
(``benchmarks/test_measurement_precision.py``). The default stays float32 because that
fraction is not below a tenth on the paper's networks (docs/guide.md, "Measurement
precision"). Imports torch only where it runs, so the configuration and the CLI's help can
read the names without it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Final, Literal, cast, get_args

if TYPE_CHECKING:
    import torch

MeasurementPrecision = Literal["float32", "bfloat16"]
MEASUREMENT_PRECISIONS: Final[tuple[str, ...]] = get_args(MeasurementPrecision)
#: float32: bfloat16's error is not below a tenth of the standard error everywhere (see the module docstring).
DEFAULT_MEASUREMENT_PRECISION: Final[MeasurementPrecision] = "float32"
# CPU capabilities (torch.backends.cpu.get_cpu_capability) under which oneDNN runs bf16
# matmuls and convolutions on AVX512 units (natively with AVX512-BF16); below them (AVX2,
# DEFAULT) bf16 is emulated and slower than float32.
BFLOAT16_CPU_CAPABILITIES: Final = frozenset({"AVX512"})


def check_measurement_precision(precision: str) -> MeasurementPrecision:
    if precision not in MEASUREMENT_PRECISIONS:
        raise ValueError(
            f"unknown measurement precision {precision!r}; choose one of {', '.join(MEASUREMENT_PRECISIONS)}"
        )
    return cast(MeasurementPrecision, precision)  # checked just above: one of the Literal's values


@contextmanager
def measurement_arithmetic(device: torch.device, precision: MeasurementPrecision) -> Iterator[None]:
    """Forward passes on ``device`` in ``precision``: float32 changes nothing; bfloat16 autocasts."""
    if precision == "float32":
        yield
        return
    import torch

    with torch.autocast(device.type, dtype=torch.bfloat16):
        yield


def per_sample_losses_in_float32(losses: torch.Tensor) -> torch.Tensor:
    """A user's loss may come back in bf16 under autocast: sums over samples stay float32/float64."""
    import torch

    return losses if losses.dtype in (torch.float32, torch.float64) else losses.float()


def bfloat16_unsupported_reason(device: torch.device) -> str | None:
    """Why bfloat16 autocast would not be native on ``device`` (None: it is)."""
    import torch

    if device.type == "cuda":
        return None if torch.cuda.is_bf16_supported() else "this CUDA device has no bf16 arithmetic"
    if device.type != "cpu":
        return f"bf16 support on {device.type} is not checked"
    capability = torch.backends.cpu.get_cpu_capability()
    if capability not in BFLOAT16_CPU_CAPABILITIES:
        return f"CPU capability {capability}: bf16 matmuls would be emulated, slower than float32"
    return None


__all__ = [
    "BFLOAT16_CPU_CAPABILITIES",
    "DEFAULT_MEASUREMENT_PRECISION",
    "MEASUREMENT_PRECISIONS",
    "MeasurementPrecision",
    "bfloat16_unsupported_reason",
    "check_measurement_precision",
    "measurement_arithmetic",
    "per_sample_losses_in_float32",
]
