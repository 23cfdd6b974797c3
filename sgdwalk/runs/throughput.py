"""The device throughput a run's FLOPs (``cost.py``) are turned into time with, apart from the
cost model so that ``sgdwalk sweep --help`` can show its default without importing torch.

A model with one stated guess, the fraction of the card's peak these runs reach, until a
card has timed them: ``benchmarks/gpu_speed.py`` measures the rate to put in its place
(``sgdwalk sweep --dry-run --tflops``).
"""

from __future__ import annotations

from typing import Final

# NVIDIA's H100 SXM5 datasheet: 67 TFLOP/s of dense float32 on the CUDA cores. The gpu tier
# turns TF32 off (suites/gpu/conftest.py), so the tensor cores' TF32 rates do not apply.
H100_FLOAT32_PEAK_FLOPS: Final = 67e12
# The fraction of that peak these runs are assumed to reach. VGG-11's forwards over chunks
# of hundreds of images keep the card busy, but ResNet-56's 16-64-channel convolutions and
# the MLP at batch 100 leave most of it idle, and FLOPs do not see kernel launches, the
# tracker's parameter copies nor Lanczos's reorthogonalisation on the host. A guess until a
# card has been timed.
ASSUMED_ACHIEVED_FRACTION: Final = 0.3
DEFAULT_THROUGHPUT_FLOPS: Final = H100_FLOAT32_PEAK_FLOPS * ASSUMED_ACHIEVED_FRACTION
TERA: Final = 1e12

_SI_PREFIXES: Final = (("E", 1e18), ("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3))


def format_flops(flops: float) -> str:
    """FLOPs with an SI prefix, three significant digits: "91.6 GFLOP", "11.8 PFLOP"."""
    for prefix, scale in _SI_PREFIXES:
        if flops >= scale:
            return f"{flops / scale:.3g} {prefix}FLOP"
    return f"{flops:.3g} FLOP"


__all__ = [
    "ASSUMED_ACHIEVED_FRACTION",
    "DEFAULT_THROUGHPUT_FLOPS",
    "H100_FLOAT32_PEAK_FLOPS",
    "TERA",
    "format_flops",
]
