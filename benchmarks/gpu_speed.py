"""Speed of the GPU tier on one device: training, segment measurement, forward passes, the tier's wall time.

For VGG-11, ResNet-56 and the MLP, with the data resident on the device (as the runner keeps it):

- training: SGD steps at batch 100 (forward, backward, update), in images per second;
- segment measurement: ``segment_losses`` over all K + 1 points of a segment (α grid and
  α = 1) on a measurement set, in large chunks, in images per second (K + 1 forwards each);
- plain forward passes in eval mode over the same number of images, in images per second;
  measurement / forward says what the interpolation itself costs;
- the wall time of every run of a tier profile (default: smoke on CUDA) for the parts of
  ``--archs``, run as the tier runs them (``run_walk``: float32, no TF32), per part: what
  ``pytest suites/gpu --runslow`` spends training. Its data is decided before anything runs
  (``--data``; auto falls back to Fashion-MNIST, which times the same);
- with ``--memory``: the peak device memory of a full-batch GD gradient over 5,000 images and
  of Hessian-vector products on 1,000 (the smoke profile's largest single computations);
- with ``--precision``: how much TF32 (CUDA only) and bfloat16 autocast move the heights and
  the barrier flags of the same segments against float32. The tier's policy: keep float32
  for measurements unless the barrier decisions are identical.

Numbers are printed (with ``torch.cuda.get_device_name()``) and written as JSON to ``--out``
after each phase (and each network or part within it): a phase that fails keeps what ran
before it, and the report's ``error`` says which phase failed and how.

    python benchmarks/gpu_speed.py --precision --out results/gpu/speed.json     # on a GPU box
    python benchmarks/gpu_speed.py --device cpu --tiny --out /tmp/speed.json     # anywhere, seconds

``--tiny`` uses the tiny profile's widths and a handful of images (a smoke test of the script,
not a measurement).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import platform
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

REPO: Final = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: the suites package lives at the repository root
    sys.path.insert(0, str(REPO))

from sgdwalk.base.atomic import atomic_write_text  # noqa: E402
from sgdwalk.instrument.geometry import flat_gradient, flat_parameters  # noqa: E402
from sgdwalk.instrument.measurement import MeasurementSet, per_sample_cross_entropy, segment_losses  # noqa: E402
from sgdwalk.instrument.numerics import float32_numerics  # noqa: E402
from sgdwalk.instrument.segment import alpha_grid, summarize_segment  # noqa: E402
from sgdwalk.instrument.sharpness import hessian_vector_product_operator  # noqa: E402
from sgdwalk.runs.runlog import device_name  # noqa: E402
from sgdwalk.runs.runner import run_walk  # noqa: E402
from sgdwalk.runs.sweep import load_cell_data  # noqa: E402
from sgdwalk.training.config import DEFAULT_CPU_THREADS, WalkConfig  # noqa: E402
from sgdwalk.training.data import ENV_DATA_ROOT, DatasetNotFoundError  # noqa: E402
from sgdwalk.training.models import build_model  # noqa: E402
from sgdwalk.training.optim import full_batch_gradient_  # noqa: E402
from suites.gpu.claims import DATA_CHOICES, FALLBACK_DATA, PARTS, choose_data, not_found_line  # noqa: E402
from suites.profiles import GPU_PROFILES, PROFILES, TINY_SIZES, Profile  # noqa: E402
from suites.tier_plan import DataChoice, tier_configs  # noqa: E402

ARCHS: Final[tuple[str, ...]] = ("vgg11", "resnet56", "mlp")
# (channels, image size) of the paper data: CIFAR-10 for the conv nets, MNIST for the MLP.
INPUT_SHAPE: Final[dict[str, tuple[int, int]]] = {"vgg11": (3, 32), "resnet56": (3, 32), "mlp": (1, 28)}
NUM_CLASSES: Final = 10
# The memory phase: the smoke profile's GD set and measurement set, and a few products (the
# first builds the graph that the others reuse).
GD_IMAGES: Final = 5_000
HVP_IMAGES: Final = 1_000
HVP_PRODUCTS: Final = 3
# Heights below this are "no height" when a relative change is computed (a float32 loss
# difference of order 1e-7 carries no relative information).
HEIGHT_FLOOR: Final = 1e-6


@dataclass(frozen=True)
class Sizes:
    """How much each measurement does."""

    batch_size: int
    train_steps: int  # timed SGD steps
    warm_steps: int  # SGD steps before the precision comparison (a network past its start)
    measurement_size: int
    chunk_size: int
    num_alphas: int
    repeats: int  # each timing is the best of this many (after one untimed warm-up)
    precision_segments: int
    tiny: bool


# The protocol's batch 100; 10k measurement images in chunks of 5,000 (the smoke profile
# measures 1k, the paper 45k); best of 3 against clock and launch jitter.
FULL: Final = Sizes(
    batch_size=100,
    train_steps=100,
    warm_steps=200,
    measurement_size=10_000,
    chunk_size=5_000,
    num_alphas=10,
    repeats=3,
    precision_segments=20,
    tiny=False,
)
TINY: Final = Sizes(
    batch_size=10,
    train_steps=3,
    warm_steps=3,
    measurement_size=32,
    chunk_size=32,
    num_alphas=10,
    repeats=1,
    precision_segments=2,
    tiny=True,
)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_seconds(work: Callable[[], object], device: torch.device, repeats: int) -> float:
    """The best wall time of ``repeats`` calls of ``work`` after one untimed warm-up."""
    work()
    synchronize(device)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        synchronize(device)
        times.append(time.perf_counter() - started)
    return min(times)


def learnable_data(arch: str, count: int, device: torch.device, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian images labelled by a fixed random linear map: a task a network can learn, on the device."""
    channels, size = INPUT_SHAPE[arch]
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(count, channels, size, size, generator=generator)
    teacher = torch.randn(channels * size * size, NUM_CLASSES, generator=generator)
    targets = (inputs.flatten(1) @ teacher).argmax(dim=1)
    return inputs.to(device), targets.to(device)


def make_model(arch: str, sizes: Sizes, device: torch.device) -> nn.Module:
    channels, size = INPUT_SHAPE[arch]
    width = TINY_SIZES[arch].width_multiplier if sizes.tiny else 1.0
    torch.manual_seed(0)
    return build_model(arch, channels, size, NUM_CLASSES, width).to(device)


def sgd_steps(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    steps: int,
    batch_size: int,
) -> None:
    model.train()
    for step in range(steps):
        start = (step * batch_size) % (inputs.shape[0] - batch_size + 1)
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(inputs[start : start + batch_size]), targets[start : start + batch_size]).backward()
        optimizer.step()


def one_step_segment(
    model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, batch_size: int, lr: float = 0.1
) -> tuple[torch.Tensor, torch.Tensor]:
    """θ and θ − lr·g for the minibatch gradient at θ (the model is left unchanged)."""
    model.train()
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(inputs[:batch_size]), targets[:batch_size]).backward()
    start = flat_parameters(model).detach().clone()
    end = start - lr * flat_gradient(model).detach()
    model.zero_grad(set_to_none=True)
    return start, end


@contextlib.contextmanager
def precision(mode: str, device: torch.device) -> Iterator[None]:
    """float32 (no TF32), tf32 (CUDA matmul and cuDNN), or bf16 (autocast)."""
    with float32_numerics(device, tf32=mode == "tf32"):  # the runs' own policy (WalkConfig.cuda_tf32)
        if mode == "bf16":
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
                yield
        else:
            yield


# ------------------------------------------------------------------------------ speed
def speed(arch: str, sizes: Sizes, device: torch.device) -> dict[str, float]:
    """Images per second of training, segment measurement and forward passes (float32)."""
    model = make_model(arch, sizes, device)
    count = max(sizes.measurement_size, sizes.batch_size * (sizes.train_steps + 1))
    inputs, targets = learnable_data(arch, count, device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.0, weight_decay=1e-4)
    with precision("float32", device):
        train_s = best_seconds(
            lambda: sgd_steps(model, optimizer, inputs, targets, sizes.train_steps, sizes.batch_size),
            device,
            sizes.repeats,
        )
        start, end = one_step_segment(model, inputs, targets, sizes.batch_size)
        measurement = MeasurementSet(
            inputs[: sizes.measurement_size], targets[: sizes.measurement_size], chunk_size=sizes.chunk_size
        )
        alphas = alpha_grid(sizes.num_alphas)
        measure_s = best_seconds(
            lambda: segment_losses(model, start, end, alphas, measurement, "train", include_end=True),
            device,
            sizes.repeats,
        )
        points = sizes.num_alphas + 1
        forward_images = points * sizes.measurement_size

        @torch.no_grad()
        def forward() -> None:
            model.eval()
            for _ in range(points):
                for chunk_inputs, _ in measurement.chunks():
                    model(chunk_inputs)
            model.train()

        forward_s = best_seconds(forward, device, sizes.repeats)
    train_rate = sizes.train_steps * sizes.batch_size / train_s
    measure_rate = forward_images / measure_s
    forward_rate = forward_images / forward_s
    return {
        "train_images_per_s": train_rate,
        "measure_images_per_s": measure_rate,
        "forward_images_per_s": forward_rate,
        "measure_over_forward": measure_rate / forward_rate,
        "train_over_forward": train_rate / forward_rate,
        "train_step_ms": 1000 * train_s / sizes.train_steps,
        "segment_ms": 1000 * measure_s,
    }


# -------------------------------------------------------------------------- precision
def precision_effect(arch: str, sizes: Sizes, device: torch.device) -> dict[str, dict[str, float | int | None]]:
    """Heights and barrier flags of the same segments under reduced precision against float32."""
    model = make_model(arch, sizes, device)
    count = max(sizes.measurement_size, sizes.batch_size * (sizes.warm_steps + sizes.precision_segments + 1))
    inputs, targets = learnable_data(arch, count, device, seed=1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.0, weight_decay=1e-4)
    measurement = MeasurementSet(
        inputs[: sizes.measurement_size], targets[: sizes.measurement_size], chunk_size=sizes.chunk_size
    )
    alphas = alpha_grid(sizes.num_alphas)
    modes = ["tf32", "bf16"] if device.type == "cuda" else ["bf16"]  # TF32 does not exist on a CPU
    summaries: dict[str, list[Any]] = {mode: [] for mode in ["float32", *modes]}
    with precision("float32", device):
        sgd_steps(model, optimizer, inputs, targets, sizes.warm_steps, sizes.batch_size)
    for segment in range(sizes.precision_segments):
        offset = (sizes.warm_steps + segment) * sizes.batch_size
        batch_inputs, batch_targets = inputs[offset:], targets[offset:]
        with precision("float32", device):
            start, end = one_step_segment(model, batch_inputs, batch_targets, sizes.batch_size)
        for mode in summaries:
            with precision(mode, device):
                losses = segment_losses(model, start, end, alphas, measurement, "train", include_end=True)
            summaries[mode].append(summarize_segment(alphas, losses[:-1], float(losses[-1])))
        with precision("float32", device):  # move on along the float32 path
            sgd_steps(model, optimizer, batch_inputs, batch_targets, 1, sizes.batch_size)
    reference = summaries["float32"]
    result: dict[str, dict[str, float | int | None]] = {}
    for mode in modes:
        heights = np.array([s.height_start for s in summaries[mode]])
        exact = np.array([s.height_start for s in reference])
        change = np.abs(heights - exact)
        # Relative to the float32 height, over the segments that have one.
        has_height = exact > HEIGHT_FLOOR
        result[mode] = {
            "segments": len(reference),
            "max_abs_height_change": float(np.max(change)),
            "max_rel_height_change": float(np.max(change[has_height] / exact[has_height]))
            if has_height.any()
            else None,
            "barrier_flag_changes": int(
                sum(a.barrier != b.barrier for a, b in zip(summaries[mode], reference, strict=True))
            ),
            "interior_floor_changes": int(
                sum(a.interior_floor != b.interior_floor for a, b in zip(summaries[mode], reference, strict=True))
            ),
            "float32_barriers": int(sum(s.barrier for s in reference)),
        }
    return result


# ----------------------------------------------------------------------------- memory
def peak_mib(work: Callable[[], object], device: torch.device) -> float | None:
    """Peak device memory allocated while ``work`` runs, in MiB (None off CUDA: no such count)."""
    if device.type != "cuda":
        work()
        return None
    synchronize(device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    work()
    synchronize(device)
    return torch.cuda.max_memory_allocated(device) / 2**20


def peak_memory(arch: str, sizes: Sizes, device: torch.device) -> dict[str, float | int | None]:
    """Peak memory of the tier's two largest single computations: one full-batch GD gradient
    over ``gd_images`` in one chunk (the smoke profile's 5,000 training images; runs'
    ``gd_chunk_size`` is 5,000), and Hessian-vector products on ``hvp_images`` in one chunk
    (the smoke profile's C10 sharpness on its 1,000-image measurement set, its graph kept)."""
    model = make_model(arch, sizes, device)
    gd_images, hvp_images = (64, 32) if sizes.tiny else (GD_IMAGES, HVP_IMAGES)
    inputs, targets = learnable_data(arch, gd_images, device, seed=3)
    gd = peak_mib(lambda: full_batch_gradient_(model, per_sample_cross_entropy, inputs, targets, gd_images), device)
    model.zero_grad(set_to_none=True)
    measurement = MeasurementSet(inputs[:hvp_images], targets[:hvp_images], chunk_size=hvp_images)
    point = flat_parameters(model).detach().clone()

    def products() -> None:
        operator = hessian_vector_product_operator(model, point, measurement, "train")
        vector = torch.ones_like(point)
        for _ in range(HVP_PRODUCTS):
            vector = operator(vector / vector.norm())

    hvp = peak_mib(products, device)
    return {
        "parameters_mib": point.numel() * point.element_size() / 2**20,
        "gd_images": gd_images,
        "gd_peak_mib": gd,
        "hvp_images": hvp_images,
        "hvp_peak_mib": hvp,
    }


# ------------------------------------------------------------------------------ tier
def tier_data(profile: Profile, parts: Sequence[str], mode: str, data_root: str | None) -> dict[str, DataChoice]:
    """The data of each part's runs, decided before any device time; raises ``DatasetNotFoundError``.

    As pytest's ``--sgdwalk-gpu-data``, except that auto falls back to Fashion-MNIST for every
    profile: this script times runs, and a run's time depends on the images' shape, not on
    which images they are (the conv nets' first layer sees 1 channel instead of 3, a small
    part of their work). The report records the data each part ran on.
    """
    data: dict[str, DataChoice] = {}
    for name in parts:
        part = PARTS[name]
        try:
            data[name] = choose_data(part, mode, profile, data_root, flag="--data")
        except DatasetNotFoundError:
            if mode != "auto":
                raise
            choice = choose_data(part, FALLBACK_DATA, profile, data_root, flag="--data")
            note = f"{choice.name} in place of {part.paper_data}, missing (--data auto: timing runs need no paper data)"
            data[name] = dataclasses.replace(choice, note=note)
    return data


def missing_data_line(error: DatasetNotFoundError, mode: str) -> str:
    """One line for a data set that is not there: which, and the ways on."""
    missing = not_found_line(error)
    ways = f"give its folder with --data-root DIR or ${ENV_DATA_ROOT}=DIR"
    if FALLBACK_DATA not in missing:
        ways += f", or time the runs on {FALLBACK_DATA}: --data {FALLBACK_DATA}"
    return f"gpu_speed.py: {missing} (--data {mode}); {ways}"


def time_part_runs(configs: Sequence[WalkConfig], device: torch.device) -> float:
    """Seconds to run ``configs`` one after another as the tier does (``run_walk``: float32
    without TF32, one CPU thread on a CPU)."""
    started = time.perf_counter()
    for config in configs:
        run_walk(config, data=load_cell_data(config), progress=False)
        synchronize(device)
    return time.perf_counter() - started


# ------------------------------------------------------------------------------ main
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--device",
        choices=("cuda", "cpu"),
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="device to measure (default: cuda when available, else cpu)",
    )
    parser.add_argument(
        "--tiny", action="store_true", help="tiny widths and sizes: a seconds-long smoke test (default: off)"
    )
    parser.add_argument(
        "--archs",
        default=",".join(ARCHS),
        help=f"comma-separated architectures, in every phase (default: {','.join(ARCHS)})",
    )
    parser.add_argument(
        "--precision",
        action="store_true",
        help="compare TF32 and bf16 heights and barrier flags with float32 (default: off)",
    )
    parser.add_argument(
        "--memory",
        action="store_true",
        help=f"peak memory of a GD gradient over {GD_IMAGES:,} images and of Hessian-vector products on "
        f"{HVP_IMAGES:,} (CUDA; default: off)",
    )
    parser.add_argument(
        "--tier-profile",
        choices=("none", *GPU_PROFILES),
        default=None,
        help="time every run of this tier profile's parts among --archs (default: smoke on cuda without --tiny, "
        "else none)",
    )
    parser.add_argument(
        "--data",
        choices=DATA_CHOICES,
        default="auto",
        help="data of the tier runs, as pytest's --sgdwalk-gpu-data, but auto falls back to "
        f"{FALLBACK_DATA} for every profile (a timing needs no paper data) (default: auto)",
    )
    parser.add_argument("--data-root", default=None, help="data root of the tier runs (default: the usual search)")
    parser.add_argument(
        "--out", metavar="PATH", default=None, help="write the numbers as JSON here, after each phase (default: none)"
    )
    args = parser.parse_args(argv)
    args.archs = [arch for arch in args.archs.split(",") if arch]
    unknown = sorted(set(args.archs) - set(ARCHS))
    if unknown or not args.archs:
        parser.error(f"--archs: choose from {', '.join(ARCHS)}, got {','.join(args.archs) or 'none'}")
    return args


def write_report(path: Path | None, numbers: Mapping[str, Any]) -> None:
    """The numbers so far, whole or not at all: a phase that fails later keeps what ran."""
    if path is not None:
        atomic_write_text(path, json.dumps(numbers, indent=2) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_speed.py: --device cuda, but torch sees no CUDA device", file=sys.stderr)
        return 2
    sizes = TINY if args.tiny else FULL
    archs: list[str] = args.archs
    tier_profile = args.tier_profile or ("smoke" if device.type == "cuda" and not args.tiny else "none")
    # The tier's data is decided first: a missing data set stops the script before it spends device time.
    tier: dict[str, Any] | None = None
    configs: dict[str, list[WalkConfig]] = {}
    if tier_profile != "none":
        profile = PROFILES[tier_profile]
        try:
            data = tier_data(profile, archs, args.data, args.data_root)
        except DatasetNotFoundError as error:
            print(missing_data_line(error, args.data), file=sys.stderr)
            return 2
        all_configs = tier_configs(profile, device.type, data)
        configs = {name: [c.replace(data_root=args.data_root) for c in all_configs if c.arch == name] for name in data}
        tier = {
            "profile": tier_profile,
            "runs": len(all_configs),
            "data": {name: {"name": choice.name, "note": choice.note} for name, choice in data.items()},
            "by_part_s": {},
            "wall_s": None,
        }
    out = None if args.out is None else Path(args.out)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
    saved_threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(DEFAULT_CPU_THREADS)  # as every run does on a CPU (WalkConfig.cpu_threads)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device_name(device)
    print(f"device: {name}; torch {torch.__version__}; float32 (TF32 off); sizes: {'tiny' if args.tiny else 'full'}")
    if tier is not None:
        for part, choice in tier["data"].items():
            print(f"tier {tier_profile}, {part}: {choice['note']}")

    numbers: dict[str, Any] = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "device": device.type,
        "device_name": name,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "sizes": asdict(sizes),
        "archs": {},
        "images_per_second": {},
        "precision": None,
        "memory": None,
        "tier": tier,
        "phases_done": [],
        "error": None,
    }
    phase = "speed"
    try:
        header = f"{'arch':<9} {'train img/s':>12} {'measure img/s':>14} {'forward img/s':>14} {'measure/fwd':>11} {'train/fwd':>9} {'step ms':>8} {'segment ms':>10}"
        print(header)
        for arch in archs:
            result = speed(arch, sizes, device)
            numbers["archs"][arch] = result
            for kind in ("train", "measure", "forward"):
                numbers["images_per_second"][f"{arch}/{kind}"] = result[f"{kind}_images_per_s"]
            print(
                f"{arch:<9} {result['train_images_per_s']:>12.0f} {result['measure_images_per_s']:>14.0f} "
                f"{result['forward_images_per_s']:>14.0f} {result['measure_over_forward']:>11.2f} "
                f"{result['train_over_forward']:>9.2f} {result['train_step_ms']:>8.2f} {result['segment_ms']:>10.1f}"
            )
            write_report(out, numbers)
        numbers["phases_done"].append(phase)
        write_report(out, numbers)
        if args.precision:
            phase = "precision"
            numbers["precision"] = {arch: precision_effect(arch, sizes, device) for arch in archs}
            identical = True
            for arch, modes in numbers["precision"].items():
                for mode, effect in modes.items():
                    identical &= mode != "tf32" or effect["barrier_flag_changes"] == 0
                    relative = effect["max_rel_height_change"]
                    print(
                        f"precision {arch} {mode}: heights move by up to {effect['max_abs_height_change']:.3g} "
                        f"({'-' if relative is None else f'{relative:.2%}'} of the height); barrier flags differ on "
                        f"{effect['barrier_flag_changes']} of {effect['segments']} segments "
                        f"(float32 saw {effect['float32_barriers']}); interior floors on {effect['interior_floor_changes']}"
                    )
            verdict = (
                "barrier decisions identical under TF32: it may be used for measurements"
                if identical and device.type == "cuda"
                else "keep float32 for measurements"
            )
            numbers["precision_policy"] = verdict
            print(f"policy: {verdict}")
            numbers["phases_done"].append(phase)
            write_report(out, numbers)
        if args.memory:
            phase = "memory"
            numbers["memory"] = {}
            for arch in archs:
                memory = numbers["memory"][arch] = peak_memory(arch, sizes, device)
                gd, hvp = memory["gd_peak_mib"], memory["hvp_peak_mib"]
                print(
                    f"memory {arch}: GD over {memory['gd_images']} images "
                    f"{'-' if gd is None else f'{gd:,.0f} MiB'}, Hessian-vector products on {memory['hvp_images']} "
                    f"{'-' if hvp is None else f'{hvp:,.0f} MiB'} (parameters {memory['parameters_mib']:.1f} MiB)"
                )
                write_report(out, numbers)
            numbers["phases_done"].append(phase)
            write_report(out, numbers)
        if tier is not None:
            phase = "tier"
            started = time.perf_counter()
            for part, part_configs in configs.items():
                tier["by_part_s"][part] = time_part_runs(part_configs, device)
                write_report(out, numbers)
            tier["wall_s"] = time.perf_counter() - started
            parts = ", ".join(f"{arch} {seconds:.0f} s" for arch, seconds in tier["by_part_s"].items())
            print(f"tier {tier_profile}: {tier['wall_s']:.0f} s for {tier['runs']} runs ({parts}) on {name}")
            numbers["phases_done"].append(phase)
    except BaseException as error:
        numbers["error"] = f"{phase}: {type(error).__name__}: {error}"
        raise
    finally:
        torch.set_num_threads(saved_threads)
        write_report(out, numbers)
        if out is not None:
            print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
