"""Float32's error in what the instrument decides, measured against float64 at the same points.

For VGG-11, ResNet-56 and the MLP (a network a few hundred SGD steps past its start, on a
learnable task resident on the device, as ``gpu_speed.py`` builds them), a few real segments
θ_t → θ_{t+1} are measured twice on the same measurement set: as every run measures them
(``segment_losses`` in float32, under the runs' float32 policy: no TF32), and in float64
(a float64 copy of the network at the same float32 endpoints, each point evaluated by a plain
forward pass). Printed and written as JSON, per network, the largest float32 error of

- the segment losses, relative to the float64 loss;
- the heights L(θ_t) − floor, absolute and relative;
- the barrier excess (highest interior loss − higher endpoint) relative to the higher
  endpoint, against ``BARRIER_RELATIVE_TOLERANCE`` (a barrier is an excess above it);
- the floor dip (lower endpoint − floor) relative to the lower endpoint, against
  ``FLOOR_RELATIVE_TOLERANCE`` (an interior floor is a dip above it);

and how many barrier and interior-floor flags float32 decided otherwise. A tolerance is safe
on a device when the float32 error stays well below it (the verdict asks for a tenth).

    python benchmarks/float32_error.py --out results/gpu/float32-error.json   # on a GPU box, ~1 min
    python benchmarks/float32_error.py --device cpu --tiny                     # anywhere, seconds
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import numpy as np
import torch
from numpy.typing import NDArray

REPO: Final = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: benchmarks and suites live at the repository root
    sys.path.insert(0, str(REPO))

from benchmarks.gpu_speed import ARCHS, learnable_data, make_model, one_step_segment, sgd_steps  # noqa: E402
from benchmarks.gpu_speed import FULL as FULL_SPEED_SIZES  # noqa: E402
from benchmarks.gpu_speed import TINY as TINY_SPEED_SIZES  # noqa: E402
from sgdwalk.instrument.measurement import MeasurementSet, segment_losses  # noqa: E402
from sgdwalk.instrument.numerics import float32_numerics  # noqa: E402
from sgdwalk.instrument.segment import alpha_grid, summarize_segment  # noqa: E402
from sgdwalk.instrument.tolerances import BARRIER_RELATIVE_TOLERANCE, FLOOR_RELATIVE_TOLERANCE  # noqa: E402
from sgdwalk.runs.runlog import device_name  # noqa: E402
from sgdwalk.training.config import DEFAULT_CPU_THREADS  # noqa: E402

# The verdict's margin: float32's error must stay below a tenth of a tolerance for the
# tolerance to decide on the landscape rather than on rounding.
SAFETY_FACTOR: Final = 0.1
# Heights below this carry no relative information in float32 (a loss difference of ~1e-7).
HEIGHT_FLOOR: Final = 1e-6


@dataclass(frozen=True)
class Sizes:
    warm_steps: int  # SGD steps before the first segment
    segments: int
    measurement_size: int  # the smoke profile measures 1,000 images
    chunk_size: int
    num_alphas: int
    tiny: bool


FULL: Final = Sizes(warm_steps=200, segments=10, measurement_size=1_000, chunk_size=1_000, num_alphas=10, tiny=False)
TINY: Final = Sizes(warm_steps=3, segments=3, measurement_size=32, chunk_size=32, num_alphas=10, tiny=True)


# ------------------------------------------------------------------------- the errors
@dataclass(frozen=True)
class SegmentError:
    """Float32's error on one segment's losses (grid points then α = 1) against float64's."""

    loss_relative: float
    height_absolute: float
    height_relative: float | None  # None: the float64 height is below HEIGHT_FLOOR
    barrier_excess_relative: float
    floor_dip_relative: float
    barrier_flag_differs: bool
    interior_floor_flag_differs: bool


def barrier_excess(losses: NDArray[np.float64]) -> float:
    """(highest interior loss − higher endpoint) / |higher endpoint|: a barrier when above the tolerance."""
    high = max(losses[0], losses[-1])
    return float((np.max(losses[1:-1]) - high) / abs(high))


def floor_dip(losses: NDArray[np.float64]) -> float:
    """(lower endpoint − floor) / |lower endpoint|: an interior floor when above the tolerance
    (and the minimum is interior)."""
    low = min(losses[0], losses[-1])
    return float((low - np.min(losses)) / abs(low))


def segment_error(
    alphas: NDArray[np.float64], float32: NDArray[np.float64], float64: NDArray[np.float64]
) -> SegmentError:
    """Float32's error on one segment's losses (at ``alphas``, then α = 1), float64 the reference;
    the flags are the instrument's own decisions (``summarize_segment``)."""
    height32 = float32[0] - np.min(float32)
    height64 = float64[0] - np.min(float64)
    excess32, excess64 = barrier_excess(float32), barrier_excess(float64)
    decided32 = summarize_segment(alphas, float32[:-1], float(float32[-1]))
    decided64 = summarize_segment(alphas, float64[:-1], float(float64[-1]))
    return SegmentError(
        loss_relative=float(np.max(np.abs(float32 - float64) / np.abs(float64))),
        height_absolute=float(abs(height32 - height64)),
        height_relative=float(abs(height32 - height64) / height64) if height64 > HEIGHT_FLOOR else None,
        barrier_excess_relative=abs(excess32 - excess64),
        floor_dip_relative=abs(floor_dip(float32) - floor_dip(float64)),
        barrier_flag_differs=decided32.barrier != decided64.barrier,
        interior_floor_flag_differs=decided32.interior_floor != decided64.interior_floor,
    )


def summary(errors: Sequence[SegmentError]) -> dict[str, Any]:
    """The largest of each error over the segments, each against its tolerance."""
    relative_heights = [e.height_relative for e in errors if e.height_relative is not None]
    barrier = max(e.barrier_excess_relative for e in errors)
    floor = max(e.floor_dip_relative for e in errors)
    return {
        "segments": len(errors),
        "max_loss_relative_error": max(e.loss_relative for e in errors),
        "max_height_absolute_error": max(e.height_absolute for e in errors),
        "max_height_relative_error": max(relative_heights) if relative_heights else None,
        "max_barrier_excess_error": barrier,
        "barrier_tolerance": BARRIER_RELATIVE_TOLERANCE,
        "barrier_error_over_tolerance": barrier / BARRIER_RELATIVE_TOLERANCE,
        "max_floor_dip_error": floor,
        "floor_tolerance": FLOOR_RELATIVE_TOLERANCE,
        "floor_error_over_tolerance": floor / FLOOR_RELATIVE_TOLERANCE,
        "barrier_flags_differing": sum(e.barrier_flag_differs for e in errors),
        "interior_floor_flags_differing": sum(e.interior_floor_flag_differs for e in errors),
        "barrier_tolerance_safe": barrier < SAFETY_FACTOR * BARRIER_RELATIVE_TOLERANCE,
        "floor_tolerance_safe": floor < SAFETY_FACTOR * FLOOR_RELATIVE_TOLERANCE,
    }


# ------------------------------------------------------------------------ measurement
def measured_errors(arch: str, sizes: Sizes, device: torch.device) -> list[SegmentError]:
    """Float32 against float64 on ``sizes.segments`` consecutive SGD segments of ``arch``."""
    speed_sizes = TINY_SPEED_SIZES if sizes.tiny else FULL_SPEED_SIZES
    model = make_model(arch, speed_sizes, device)
    batch = speed_sizes.batch_size
    count = max(sizes.measurement_size, batch * (sizes.warm_steps + sizes.segments + 1))
    inputs, targets = learnable_data(arch, count, device, seed=2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.0, weight_decay=1e-4)
    measured = inputs[: sizes.measurement_size], targets[: sizes.measurement_size]
    set32 = MeasurementSet(*measured, chunk_size=sizes.chunk_size)
    set64 = MeasurementSet(measured[0].double(), measured[1], chunk_size=sizes.chunk_size)
    alphas = alpha_grid(sizes.num_alphas)
    sgd_steps(model, optimizer, inputs, targets, sizes.warm_steps, batch)
    errors = []
    for segment in range(sizes.segments):
        offset = (sizes.warm_steps + segment) * batch
        batch_inputs, batch_targets = inputs[offset:], targets[offset:]
        start, end = one_step_segment(model, batch_inputs, batch_targets, batch)
        float32 = segment_losses(model, start, end, alphas, set32, "train", include_end=True)
        # The same float32 endpoints and buffers, every point formed and evaluated in float64.
        model64 = copy.deepcopy(model).double()
        float64 = segment_losses(
            model64, start.double(), end.double(), alphas, set64, "train", include_end=True, exploit_affine_input=False
        )
        errors.append(segment_error(alphas, float32, float64))
        sgd_steps(model, optimizer, batch_inputs, batch_targets, 1, batch)  # on along the float32 path
    return errors


# ------------------------------------------------------------------------------ main
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--device",
        choices=("cuda", "cpu"),
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="device to measure (default: cuda when available, else cpu)",
    )
    parser.add_argument("--tiny", action="store_true", help="tiny widths and sizes: seconds on a CPU (default: off)")
    parser.add_argument(
        "--archs", default=",".join(ARCHS), help=f"comma-separated architectures (default: {','.join(ARCHS)})"
    )
    parser.add_argument("--out", metavar="PATH", default=None, help="write the numbers as JSON here (default: none)")
    args = parser.parse_args(argv)
    args.archs = [arch for arch in args.archs.split(",") if arch]
    if not args.archs or set(args.archs) - set(ARCHS):
        parser.error(f"--archs: choose from {', '.join(ARCHS)}, got {','.join(args.archs) or 'none'}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("float32_error.py: --device cuda, but torch sees no CUDA device", file=sys.stderr)
        return 2
    sizes = TINY if args.tiny else FULL
    name = device_name(device)
    print(f"device: {name}; torch {torch.__version__}; float32 (TF32 off) against float64")
    numbers: dict[str, Any] = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "device": device.type,
        "device_name": name,
        "torch": torch.__version__,
        "sizes": asdict(sizes),
        "safety_factor": SAFETY_FACTOR,
        "archs": {},
    }
    saved_threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(DEFAULT_CPU_THREADS)  # as every run does on a CPU
    print(
        f"{'arch':<9} {'segs':>4} {'loss rel':>9} {'height abs':>10} {'height rel':>10} "
        f"{'barrier err/tol':>15} {'floor err/tol':>13} {'flags differ':>12}"
    )
    try:
        with float32_numerics(device):  # the runs' policy: float32 without TF32
            for arch in args.archs:
                result = summary(measured_errors(arch, sizes, device))
                numbers["archs"][arch] = result
                relative = result["max_height_relative_error"]
                print(
                    f"{arch:<9} {result['segments']:>4} {result['max_loss_relative_error']:>9.1e} "
                    f"{result['max_height_absolute_error']:>10.1e} "
                    f"{'-' if relative is None else f'{relative:.1e}':>10} "
                    f"{result['barrier_error_over_tolerance']:>15.3f} {result['floor_error_over_tolerance']:>13.3f} "
                    f"{result['barrier_flags_differing']:>5} / {result['interior_floor_flags_differing']:<4}"
                )
    finally:
        torch.set_num_threads(saved_threads)
    for tolerance in ("barrier", "floor"):
        unsafe = [arch for arch, result in numbers["archs"].items() if not result[f"{tolerance}_tolerance_safe"]]
        verdict = (
            f"float32's error above a tenth of the {tolerance} tolerance on {', '.join(unsafe)}"
            if unsafe
            else f"float32's error below a tenth of the {tolerance} tolerance"
        )
        numbers[f"{tolerance}_verdict"] = verdict
        print(f"{tolerance}: {verdict}")
    if args.out:
        path = Path(args.out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(numbers, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
