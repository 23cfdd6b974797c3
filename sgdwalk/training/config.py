"""Everything one `sgdwalk walk` run depends on, as one frozen, JSON round-trippable value.

A run directory stores its ``WalkConfig`` as ``config.json``; ``--config FILE`` reads the
same format (JSON, or TOML with the same keys). Unknown keys are rejected so that a typo
never silently falls back to a default.

Each field is declared once, with its help, its section of ``--help`` and its bounds
(``sgdwalk.base.settings``): the flags of ``sgdwalk walk`` and the checks of a value are made
from these declarations, which make this module longer than most (one idea: what defines a run).

The defaults are the laptop run: the paper's MLP on a 10,000-sample subset of
Fashion-MNIST for 5 epochs, the first 50 steps of epochs 1 and 5 measured on 1,000 training
samples. Measuring a step costs about 30 training steps (10 forward passes over the
measurement set), so the measured steps set the run time: about a minute on two CPU cores
(62 s with other processes holding a load average of 6; one intra-op thread, see
DEFAULT_CPU_THREADS), figures included. The paper's CIFAR-10 protocol (docs/protocol.md) is
``--arch vgg11 --data cifar10 --augment --train-subset 0 --epochs 100 --track-epochs
1,10,25,100 --steps-per-window 0 --measurement-size 0 --cpu-threads 0`` (0: no limit).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Final, Literal, get_args

from sgdwalk.base.errors import SgdwalkError
from sgdwalk.base.json_data import dumps
from sgdwalk.base.mapping_files import read_mapping_file
from sgdwalk.base.settings import declared_fields, first_problem, setting
from sgdwalk.instrument.batchnorm import BatchNormMode
from sgdwalk.instrument.measurement_precision import (
    DEFAULT_MEASUREMENT_PRECISION,
    MeasurementPrecision,
)
from sgdwalk.instrument.offload_targets import OffloadTarget
from sgdwalk.instrument.sampling_defaults import DEFAULT_FIRST_LOOK, DEFAULT_HEIGHT_RELATIVE_SE, DEFAULT_HEIGHT_SE
from sgdwalk.instrument.step_quantity_defaults import (
    HESSIAN_TRACE_PROBES,
    MINIMUM_HESSIAN_TRACE_PROBES,
    TOP_EIGENVALUES_K,
)
from sgdwalk.training import lr_schedules
from sgdwalk.training.names import ACTIVATIONS, ARCHITECTURES, CONFIGURABLE_LAYERS, DATASETS

OptimizerName = Literal["sgd", "gd", "noisy-gd", "full-batch-adam"]
OPTIMIZERS: Final[tuple[str, ...]] = get_args(OptimizerName)
# One update per epoch on the exact gradient of the whole training subset.
FULL_BATCH_OPTIMIZERS: Final[tuple[str, ...]] = ("gd", "noisy-gd", "full-batch-adam")
# Those with a diagonal preconditioner (the preconditioned sharpness reads it).
ADAPTIVE_OPTIMIZER_NAMES: Final[tuple[str, ...]] = ("full-batch-adam",)

LRScheduleName = Literal["constant", "step", "cyclical", "trapezoid"]
LR_SCHEDULES: Final[tuple[str, ...]] = get_args(LRScheduleName)

MeasurementMode = Literal["exact", "targeted"]
MEASUREMENT_MODES: Final[tuple[str, ...]] = get_args(MeasurementMode)

DeviceName = Literal["auto", "cpu", "cuda"]
DEVICES: Final[tuple[str, ...]] = get_args(DeviceName)

# --- defaults, each with its reason --------------------------------------------------------
# The authors' seed, learning rate, batch and weight decay (docs/protocol.md#sgd-runs).
DEFAULT_SEED: Final = 1111
DEFAULT_LR: Final = 0.1
DEFAULT_BATCH_SIZE: Final = 100
DEFAULT_WEIGHT_DECAY: Final = 1e-4
# The authors' c: σ² = c · (max per-coordinate gradient variance at θ_0) (docs/protocol.md#gd-with-isotropic-noise).
DEFAULT_NOISE_SCALE: Final = 0.02
# Minibatches for that variance: 50 batches give each coordinate's variance a relative
# standard error of about sqrt(2/49) ≈ 20%, enough for a noise scale set by hand (c).
DEFAULT_NOISE_BATCHES: Final = 50
# Laptop run: 10k samples = 100 steps per epoch at batch 100, i.e. a whole epoch per window.
DEFAULT_TRAIN_SUBSET: Final = 10_000
# 5 epochs: the second window sees a trained network (Fashion-MNIST MLP ~87% validation
# accuracy) while the whole run stays under two minutes on two CPU cores.
DEFAULT_EPOCHS: Final = 5
DEFAULT_TRACK_EPOCHS: Final[tuple[int, ...]] = (1, 5)
# The first 50 steps of each tracked epoch (half of it with the default subset): enough for
# the window statistics and the walk figure, and it keeps the laptop run near a minute.
DEFAULT_STEPS_PER_WINDOW: Final = 50
# 1,000 samples put the standard error of the mean cross-entropy near 2-3% of it, while the
# loss *differences* along a segment (the same samples at every α) are far more precise;
# the cost of a measured step is proportional to this size.
DEFAULT_MEASUREMENT_SIZE: Final = 1_000
# The authors' α grid 0, 0.1, …, 0.9 (docs/definitions.md#segment).
DEFAULT_NUM_ALPHAS: Final = 10
# Measurement chunk: bounds memory of a forward pass (a VGG-11 chunk of 1024 at 32x32 fits
# a few GiB); the mean does not depend on it except through batch norm in train mode.
DEFAULT_CHUNK_SIZE: Final = 1024
# The authors' full-batch GD chunk (docs/protocol.md#full-batch-gd).
DEFAULT_GD_CHUNK_SIZE: Final = 5_000
# Smith (2017) recommends a half cycle of 2-10 epochs; 2 is the short end.
DEFAULT_LR_STEP_EPOCHS: Final = 2.0
DEFAULT_LR_GAMMA: Final = 0.1
# Intra-op CPU threads (torch.set_num_threads) during the run; None: torch's default, one
# per core. 1 by default, for two reasons measured on the 2-core laptop: (1) on a CPU the
# records depend on it (float sums split across threads are added in another order: the
# default run's epoch-5 mean height read 0.0151 with one thread, 0.0160 with two), so it is
# part of the run's definition; (2) with other processes on the cores, a second thread
# waiting at every barrier made the default run 5 min 12 s instead of 54 s.
DEFAULT_CPU_THREADS: Final = 1
# A full-batch epoch is one update, yet evaluating the whole training and validation split
# costs about as much as that update (a 600-update GD run spent 3 of its 5 minutes
# evaluating). Unless evaluate_every_updates says otherwise, full-batch runs evaluate every
# 10 updates: a learning curve of 10% of the updates, at a tenth of the cost. The first and
# the last epoch are always evaluated (the claims read the final values).
DEFAULT_FULL_BATCH_EVALUATE_EVERY_UPDATES: Final = 10
# The same for checkpoints: a full-batch run checkpoints at most every 100 updates unless
# checkpoint_every_updates says otherwise (a checkpoint writes the model, the optimizer and
# every record so far; each update costs a fraction of that).
DEFAULT_FULL_BATCH_CHECKPOINT_EVERY_UPDATES: Final = 100
# The largest seed: torch seeds a generator from a 64-bit integer (at most 2**64 - 1) and the
# runner seeds its independent streams from the seed plus a small offset, so seeds up to
# 2**63 - 1 leave every derived seed in range with room to spare.
MAX_SEED: Final = 2**63 - 1


class ConfigError(SgdwalkError, ValueError):
    """A configuration that cannot describe a run (the message says which field and why)."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _tuple_of_ints(value: Any, name: str) -> tuple[int, ...]:
    """Integers from a list, or from the CLI spelling "1,10,25"; a float or a string in a
    list is refused (1.5 must not become epoch 1)."""
    if isinstance(value, str):
        try:
            return tuple(int(piece) for piece in value.split(",") if piece.strip())
        except ValueError:
            raise ConfigError(f"{name} must be a list of integers, got {value!r}") from None
    if not isinstance(value, (list, tuple)) or not all(_is_int(item) for item in value):
        raise ConfigError(f"{name} must be a list of integers, got {value!r}")
    return tuple(value)


def _step_windows(value: Any) -> tuple[tuple[int, int], ...]:
    """Step windows from pairs of integers, or from the CLI spelling "0:20,160:200"."""
    problem = f"track_steps must be windows START:STOP of 0-based steps, got {value!r}"
    if isinstance(value, str):
        try:
            windows = tuple(
                (int(start), int(stop))
                for start, stop in (piece.split(":") for piece in value.split(",") if piece.strip())
            )
        except ValueError:
            raise ConfigError(problem) from None
    elif isinstance(value, (list, tuple)) and all(
        isinstance(pair, (list, tuple)) and len(pair) == 2 and all(_is_int(end) for end in pair) for pair in value
    ):
        windows = tuple((int(start), int(stop)) for start, stop in value)
    else:
        raise ConfigError(problem)
    for start, stop in windows:
        if not 0 <= start < stop:
            raise ConfigError(f"track_steps: a step window needs 0 <= START < STOP, got {start}:{stop}")
    return windows


# Sections of `sgdwalk walk --help`, in the order the fields below fill them.
MODEL_AND_DATA: Final = "model and data"
OPTIMIZER: Final = "optimizer and learning rate"
MEASURED: Final = "what is measured"
RUN: Final = "run"
FILES: Final = "files"
# Why a count must be at least 2.
A_VARIANCE_NEEDS_TWO: Final = "a variance needs two samples"


@dataclass(frozen=True)
class WalkConfig:
    """One training run and what is measured along it. See ``--help`` of `sgdwalk walk`.

    Each field is declared once, with ``setting``: its flag, its ``--help`` line and the
    checks of its value follow from it (``sgdwalk.base.settings``); ``validate`` adds the
    rules that relate several fields.
    """

    # --- model and data
    arch: str = setting("mlp", "network (sgdwalk.training.models)", section=MODEL_AND_DATA, choices=ARCHITECTURES)
    data: str = setting("fashion-mnist", "data set (sgdwalk.training.data)", section=MODEL_AND_DATA, choices=DATASETS)
    data_root: str | None = setting(
        None,
        "folder holding the data set; else $SGDWALK_DATA_ROOT, system folders, cache",
        section=MODEL_AND_DATA,
        metavar="DIR",
    )
    download: bool = setting(False, "fetch the data set with torchvision when it is not found", section=MODEL_AND_DATA)
    train_subset: int | None = setting(
        DEFAULT_TRAIN_SUBSET,
        "train on N images of the paper's training split, a fixed seeded choice whatever --seed (0: all)",
        section=MODEL_AND_DATA,
        metavar="N",
        positive=True,
    )
    validation_subset: int | None = setting(
        None, "validate on the first N validation images (0: all)", section=MODEL_AND_DATA, metavar="N", positive=True
    )
    pad_to: int | None = setting(
        None,
        "zero-pad images to this size, e.g. 32 for the 28x28 MNISTs",
        section=MODEL_AND_DATA,
        metavar="PIXELS",
        positive=True,
    )
    augment: bool = setting(
        False, "random crop + flip of training batches (CIFAR-10, Tiny-ImageNet)", section=MODEL_AND_DATA
    )
    width_multiplier: float = setting(
        1.0, "scale every hidden width (1: the paper's networks)", section=MODEL_AND_DATA, metavar="X", positive=True
    )
    # The MLP's layers (the protocol's network by default; X1 runs it without batch norm, tanh).
    batch_norm: bool = setting(
        True, "mlp: batch norm after each hidden linear layer (--no-batch-norm drops it)", section=MODEL_AND_DATA
    )
    activation: str = setting("relu", "mlp: the hidden nonlinearity", section=MODEL_AND_DATA, choices=ACTIVATIONS)
    # --- optimizer
    optimizer: OptimizerName = setting(
        "sgd",
        "sgd: minibatch SGD; gd: exact full-batch GD; noisy-gd: GD plus isotropic Gaussian noise; "
        "full-batch-adam: Adam (betas 0.9, 0.999; eps 1e-8) on the exact full-batch gradient",
        section=OPTIMIZER,
    )
    lr: float = setting(
        DEFAULT_LR, "learning rate (the base of the schedule)", section=OPTIMIZER, metavar="LR", positive=True
    )
    batch_size: int = setting(
        DEFAULT_BATCH_SIZE,
        "minibatch size (SGD; also the variance estimate of noisy-gd)",
        section=OPTIMIZER,
        metavar="B",
        positive=True,
    )
    weight_decay: float = setting(
        DEFAULT_WEIGHT_DECAY,
        "L2 weight decay, added to the gradient as torch.optim.SGD does",
        section=OPTIMIZER,
        metavar="WD",
        at_least=0,
    )
    noise_scale: float = setting(
        DEFAULT_NOISE_SCALE,
        "noisy-gd: noise variance = C x max per-coordinate gradient variance at init",
        section=OPTIMIZER,
        metavar="C",
        at_least=0,
        why="a variance multiplier",
    )
    noise_batches: int = setting(
        DEFAULT_NOISE_BATCHES,
        "noisy-gd: minibatches used for that variance",
        section=OPTIMIZER,
        metavar="N",
        at_least=2,
        why=A_VARIANCE_NEEDS_TWO,
    )
    # --- learning-rate schedule (lr_schedules.py)
    lr_schedule: LRScheduleName = setting("constant", "learning-rate schedule (lr_schedules.py)", section=OPTIMIZER)
    lr_milestones: tuple[int, ...] = setting(
        (),
        "step schedule: multiply by --lr-gamma after these epochs",
        section=OPTIMIZER,
        metavar="E1,E2",
        at_least=1,
        why="epochs completed",
    )
    lr_gamma: float = setting(
        DEFAULT_LR_GAMMA, "step schedule: the factor", section=OPTIMIZER, metavar="G", positive=True
    )
    lr_max: float | None = setting(
        None,
        "cyclical / trapezoid: the top of the ramp (required for them)",
        section=OPTIMIZER,
        metavar="LR",
        positive=True,
    )
    lr_step_epochs: float = setting(
        DEFAULT_LR_STEP_EPOCHS,
        "cyclical: half-cycle length; trapezoid: ramp-up length",
        section=OPTIMIZER,
        metavar="EPOCHS",
        positive=True,
    )
    lr_anneal_epochs: float | None = setting(
        None,
        "trapezoid: length of the final linear anneal (none: --lr-step-epochs)",
        section=OPTIMIZER,
        metavar="EPOCHS",
        positive=True,
    )
    lr_final: float = setting(
        0.0, "trapezoid: the learning rate the anneal ends at", section=OPTIMIZER, metavar="LR", at_least=0
    )
    epochs: int = setting(
        DEFAULT_EPOCHS, "training epochs (full-batch GD: one step each)", section=OPTIMIZER, metavar="N", positive=True
    )
    # --- what is measured
    track_epochs: tuple[int, ...] = setting(
        DEFAULT_TRACK_EPOCHS, "measure every step of these epochs (1-based)", section=MEASURED, metavar="E1,E2,..."
    )
    track_every: int | None = setting(
        None, "also measure every K-th step", section=MEASURED, metavar="K", positive=True
    )
    # Windows of 0-based steps [start, stop), measured in addition to the tracked epochs:
    # settings with different batch sizes then compare at equal numbers of updates.
    track_steps: tuple[tuple[int, int], ...] = setting(
        (),
        "also measure the 0-based steps A..B-1, C..D-1 (equal updates across batch sizes)",
        section=MEASURED,
        metavar="A:B,C:D",
    )
    steps_per_window: int | None = setting(
        DEFAULT_STEPS_PER_WINDOW,
        "measure only the first N steps of each tracked epoch (0: all)",
        section=MEASURED,
        metavar="N",
        positive=True,
    )
    measurement_size: int | None = setting(
        DEFAULT_MEASUREMENT_SIZE,
        "losses are measured on a fixed, seeded subset of N training images (0: the whole training subset)",
        section=MEASURED,
        metavar="N",
        positive=True,
    )
    # exact: every tracked step reads the whole measurement set; targeted: each reads it in a
    # seeded order only until its barrier test is decided and its heights are as precise
    # as height_se / height_relative_se ask (sgdwalk.instrument.sampling).
    measurement_mode: MeasurementMode = setting(
        "exact",
        "exact: every tracked step reads the whole measurement "
        "set; targeted: reads it in a seeded order only until the step's barrier test is decided and its "
        "heights meet --height-se / --height-relative-se",
        section=MEASURED,
    )
    height_se: float | None = setting(
        DEFAULT_HEIGHT_SE,
        "targeted: standard error the heights need, in loss units "
        "(the looser of this and the relative target; none: no absolute target)",
        section=MEASURED,
        metavar="SE",
        positive=True,
    )
    height_relative_se: float | None = setting(
        DEFAULT_HEIGHT_RELATIVE_SE,
        "targeted: standard error the heights need, as a fraction of each height (none: no relative target)",
        section=MEASURED,
        metavar="FRACTION",
        positive=True,
    )
    first_look: int = setting(
        DEFAULT_FIRST_LOOK,
        "targeted: samples read before the first look (then doubled at each look)",
        section=MEASURED,
        metavar="N",
        at_least=2,
        why=A_VARIANCE_NEEDS_TWO,
    )
    bn_mode: BatchNormMode = setting("train", "batch norm during measurements (train: the paper's)", section=MEASURED)
    # The arithmetic of the segment losses' forward passes (sgdwalk.instrument.measurement_precision):
    # float32, or bfloat16 autocast; float32 by default, as bfloat16's error is not below a tenth of
    # the standard error on the paper's networks (docs/guide.md, "Measurement precision").
    measurement_precision: MeasurementPrecision = setting(
        DEFAULT_MEASUREMENT_PRECISION,
        "arithmetic of the segment losses' forward passes: bfloat16 autocast is faster where the device "
        "has bf16 units, its error a sizeable fraction of the standard error (docs/guide.md); sharpness "
        "and training stay float32",
        section=MEASURED,
    )
    # Where the tracker keeps θ_0, θ_t, g_t and the rest (sgdwalk.instrument.offload): records are
    # bitwise the same wherever they are kept, so it is left out of the config's hash.
    offload: OffloadTarget | None = setting(
        None,
        "where the tracker keeps the vectors a record needs (up to four copies of the parameters): "
        "beside the model (default), host (CPU memory: frees a GPU of them) or disk (temporary files, "
        "read back 4 MiB at a time; may be given with --resume); records are bitwise the same",
        section=MEASURED,
    )
    num_alphas: int = setting(
        DEFAULT_NUM_ALPHAS,
        "points per segment: alpha = 0, 1/K, ..., (K-1)/K",
        section=MEASURED,
        metavar="K",
        at_least=2,
    )
    chunk_size: int = setting(
        DEFAULT_CHUNK_SIZE,
        "samples per forward pass of a measurement or evaluation",
        section=MEASURED,
        metavar="N",
        positive=True,
    )
    gd_chunk_size: int = setting(
        DEFAULT_GD_CHUNK_SIZE,
        "samples per forward pass of a full-batch gradient",
        section=MEASURED,
        metavar="N",
        positive=True,
    )
    # Double backward saves about twice a forward's activations (sgdwalk.runs.cost.hessian_graph_bytes);
    # in bn_mode "train" a chunk is also the batch the sharpness's batch norm normalises over.
    hvp_chunk_size: int | None = setting(
        None,
        "samples per chunk of the sharpness's Hessian-vector products, whose double backward saves about "
        "twice a forward's activations (none: --chunk-size; in --bn-mode train also the sharpness's "
        "batch-norm batch)",
        section=MEASURED,
        metavar="N",
        positive=True,
    )
    sharpness_every: int | None = setting(
        None,
        "top Hessian eigenvalue on measured steps that are multiples of N",
        section=MEASURED,
        metavar="N",
        positive=True,
    )
    sharpness_per_tracked_epoch: bool = setting(
        False, "top Hessian eigenvalue at the end of each tracked epoch", section=MEASURED
    )
    # The optional quantities at θ_{t+1} of sgdwalk.instrument.step_quantities, each on its own schedule.
    hessian_trace_every: int | None = setting(
        None,
        "Hessian trace (Hutch++) with its standard error on measured steps that are multiples of N",
        section=MEASURED,
        metavar="N",
        positive=True,
    )
    hessian_trace_probes: int = setting(
        HESSIAN_TRACE_PROBES,
        "Hessian-vector products per trace: a third sketch, a third exact, a third probe the rest",
        section=MEASURED,
        metavar="M",
        at_least=MINIMUM_HESSIAN_TRACE_PROBES,
        why="Hutch++: 1 to sketch, 1 exact, 2 for the error",
    )
    gradient_noise_scale_every: int | None = setting(
        None,
        "gradient noise scale tr(Sigma)/|G|^2 with its standard error on measured steps that are "
        "multiples of N (per-sample gradients: needs --bn-mode eval or recompute with batch norm, or "
        "--gradient-noise-batch; memory: --hvp-chunk-size x parameters floats)",
        section=MEASURED,
        metavar="N",
        positive=True,
    )
    gradient_noise_batch: int | None = setting(
        None,
        "the noise scale from the gradients of the measurement set's minibatches of B samples, "
        "tr(Sigma) = B x their spread (with batch norm in --bn-mode train: the noise of batch-B steps)",
        section=MEASURED,
        metavar="B",
        positive=True,
    )
    top_eigenvalues_every: int | None = setting(
        None,
        "the --top-eigenvalues-k largest Hessian eigenvalues on measured steps that are multiples of N",
        section=MEASURED,
        metavar="N",
        positive=True,
    )
    top_eigenvalues_k: int = setting(
        TOP_EIGENVALUES_K, "how many of the largest Hessian eigenvalues", section=MEASURED, metavar="K", positive=True
    )
    preconditioned_sharpness_every: int | None = setting(
        None,
        "full-batch-adam: the top eigenvalue of the Hessian preconditioned by Adam's, and its stability "
        "threshold (2 + 2 beta1) / ((1 - beta1) lr), on measured steps that are multiples of N",
        section=MEASURED,
        metavar="N",
        positive=True,
    )
    # --- run
    seed: int = setting(
        DEFAULT_SEED,
        "seed of initialisation, batches, measurement set and noise",
        section=RUN,
        metavar="SEED",
        at_least=0,
        at_most=MAX_SEED,
        why="2**63 - 1",
    )
    device: DeviceName = setting("auto", "auto: cuda when available", section=RUN)
    # TF32 tensor cores for float32 matmuls and convolutions on CUDA (sgdwalk.instrument.numerics):
    # off, a run measures in full float32, the precision the instrument's tolerances assume.
    cuda_tf32: bool = setting(
        False,
        "TF32 tensor cores for float32 matmuls and convolutions on CUDA: faster, but each product's inputs "
        "keep 10 mantissa bits (off: full float32, the precision the measurement tolerances assume)",
        section=RUN,
    )
    cpu_threads: int | None = setting(
        DEFAULT_CPU_THREADS,
        "intra-op CPU threads; CPU records depend on it (0: torch's default, one per core)",
        section=RUN,
        metavar="N",
        positive=True,
    )
    # None: no run directory (an API run keeps its records in memory); the CLI picks one.
    out_dir: str | None = setting(None, "run directory for the records", section=FILES, metavar="DIR", flag="--out")
    checkpoint_every_epochs: int | None = setting(
        1, "checkpoint for --resume every N epochs (0: never)", section=RUN, metavar="N", positive=True
    )
    # Cadences in updates (see ``cadence``): evaluation and checkpoints at the end of each
    # epoch in which the update count passes a multiple of these (None: the defaults).
    checkpoint_every_updates: int | None = setting(
        None,
        "checkpoint instead when the update count passes a multiple of N "
        "(none: full-batch runs every max(N epochs, 100) updates)",
        section=RUN,
        metavar="N",
        positive=True,
    )
    evaluate_every_updates: int | None = setting(
        None,
        "evaluate the training and validation split when the update count passes a multiple of N, and at "
        "epoch 0 (θ_0, before training) and the last epoch (none: every epoch; full-batch runs every 10 updates)",
        section=RUN,
        metavar="N",
        positive=True,
    )
    progress: bool = setting(True, "progress bar on a terminal", section=RUN)

    def __post_init__(self) -> None:
        # Lists from JSON/TOML (or the CLI's "1,10,25") become tuples so the config stays hashable and comparable.
        for field in declared_fields(WalkConfig):
            value = getattr(self, field.name)
            if field.kind == "int-list":
                object.__setattr__(self, field.name, _tuple_of_ints(value, field.name))
            elif field.kind == "windows":
                object.__setattr__(self, field.name, _step_windows(value))
        self.validate()

    # ----------------------------------------------------------------------- checks
    def validate(self) -> None:
        """Raise ``ConfigError`` naming the first field that cannot describe a run: first each
        field by its declaration, then the rules that relate several fields."""
        problem = first_problem(WalkConfig, self)
        if problem is not None:
            raise ConfigError(problem)
        if self.arch not in CONFIGURABLE_LAYERS and (not self.batch_norm or self.activation != "relu"):
            raise ConfigError(
                f"batch_norm and activation can be changed for {', '.join(CONFIGURABLE_LAYERS)} only, "
                f"not arch {self.arch!r}"
            )
        if (
            self.gradient_noise_scale_every is not None
            and self.gradient_noise_batch is None
            and self.bn_mode == "train"
            and self._has_batch_norm
        ):
            raise ConfigError(
                "gradient_noise_scale_every needs per-sample gradients, which batch norm in bn_mode train does not "
                "give: use bn_mode eval or recompute, minibatch gradients (gradient_noise_batch), or an mlp "
                "without batch norm"
            )
        if self.preconditioned_sharpness_every is not None and self.optimizer not in ADAPTIVE_OPTIMIZER_NAMES:
            raise ConfigError(
                f"preconditioned_sharpness_every reads an adaptive optimizer's preconditioner: optimizer "
                f"{self.optimizer!r} has none (use {', '.join(ADAPTIVE_OPTIMIZER_NAMES)})"
            )
        if self.measurement_mode == "targeted" and self.bn_mode == "recompute":
            raise ConfigError("measurement_mode 'targeted' needs bn_mode train or eval (recompute reads the whole set)")
        if (
            self.measurement_size is not None
            and self.train_subset is not None
            and self.measurement_size > self.train_subset
        ):
            # Refused rather than cut to the subset: config.json would name a set never measured on.
            raise ConfigError(
                f"measurement_size {self.measurement_size} exceeds train_subset {self.train_subset}: the measurement "
                "set is drawn from the training subset; lower measurement_size (0: the whole subset)"
            )
        for epoch in self.track_epochs:
            if not 1 <= epoch <= self.epochs:
                raise ConfigError(
                    f"tracked epoch {epoch} is outside the run's epochs 1..{self.epochs} "
                    "(track_epochs counts from 1; lower it or raise epochs)"
                )
        if len(set(self.track_epochs)) != len(self.track_epochs):
            raise ConfigError(f"track_epochs has repeated epochs: {self.track_epochs}")
        if self.lr_schedule in ("cyclical", "trapezoid"):
            if self.lr_max is None:
                raise ConfigError(f"the {self.lr_schedule} schedule needs lr_max (the top of the ramp)")
            if self.lr_max < self.lr:
                raise ConfigError(f"lr_max ({self.lr_max}) must be at least lr ({self.lr}), the bottom of the ramp")
        if self.lr_schedule == "trapezoid":
            anneal = self.lr_step_epochs if self.lr_anneal_epochs is None else self.lr_anneal_epochs
            if self.lr_step_epochs + anneal > self.epochs:
                raise ConfigError(
                    f"the trapezoid's ramp ({self.lr_step_epochs} epochs) and anneal ({anneal} epochs) "
                    f"do not fit in {self.epochs} epochs"
                )

    @property
    def _has_batch_norm(self) -> bool:
        """Every network has batch norm but an mlp built without it."""
        return self.arch not in CONFIGURABLE_LAYERS or self.batch_norm

    # ----------------------------------------------------------------- conversions
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types: tuples become lists."""
        return {
            f.name: list(value) if isinstance(value, tuple) else value
            for f in fields(self)
            for value in [getattr(self, f.name)]
        }

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> WalkConfig:
        """The inverse of ``to_dict``; missing keys take defaults, unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown configuration key(s): {', '.join(unknown)}")
        try:
            return cls(**dict(values))
        except TypeError as error:  # a wrong type that comparison operators reject
            raise ConfigError(str(error)) from None

    def replace(self, **changes: Any) -> WalkConfig:
        return dataclasses.replace(self, **changes)

    def to_json(self) -> str:
        return dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @property
    def result_hash(self) -> str:
        """A short hash of the fields that change the records (not where they go or how shown).

        A field added after runs were first hashed enters the hash only when it differs
        from its default, so a run that leaves it alone keeps the hash it always had.
        """
        relevant = {
            k: v
            for k, v in self.to_dict().items()
            if k not in _FIELDS_WITHOUT_EFFECT and not (k in _FIELDS_ADDED_LATER and v == field_default(k))
        }
        canonical = json.dumps(relevant, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:CONFIG_HASH_LENGTH]


# Where the data lives, where records go, whether a bar is drawn and where the tracker keeps its
# vectors leave the records alone.
_FIELDS_WITHOUT_EFFECT: Final = frozenset(
    {"data_root", "download", "out_dir", "checkpoint_every_epochs", "checkpoint_every_updates", "progress", "offload"}
)
# Fields added after the first hashed runs (sweep cells, baselines), hashed only off their default.
_FIELDS_ADDED_LATER: Final = frozenset(
    {
        "batch_norm",
        "activation",
        "evaluate_every_updates",
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
    }
)
# 12 hex digits: 48 bits, no collision among any plausible number of runs of one project.
CONFIG_HASH_LENGTH: Final = 12

FIELD_NAMES: Final[tuple[str, ...]] = tuple(f.name for f in fields(WalkConfig))


def field_default(name: str) -> Any:
    """The default of one field."""
    for f in fields(WalkConfig):
        if f.name == name:
            return f.default
    raise KeyError(name)


# The fields that decide the tensors a run trains and validates on (what runner.load_walk_data
# reads): runs equal in these share their data.
DATA_FIELDS: Final[tuple[str, ...]] = ("data", "data_root", "download", "train_subset", "validation_subset", "pad_to")


def data_key(config: WalkConfig) -> tuple[Any, ...]:
    """The values of ``DATA_FIELDS``: the key of a cache of loaded data."""
    return tuple(getattr(config, name) for name in DATA_FIELDS)


def is_full_batch(config: WalkConfig) -> bool:
    """GD, noisy GD and full-batch Adam take one full-batch update per epoch."""
    return config.optimizer in FULL_BATCH_OPTIMIZERS


@dataclass(frozen=True)
class Cadence:
    """When a run evaluates and checkpoints, as predicates of the epoch just completed.

    An epoch counts ``steps_per_epoch`` updates; "every N updates" means at the end of each
    epoch in which the update count reaches a multiple of N (an SGD epoch of 50 updates with
    N = 100: every second epoch). Epoch 0 (the network at θ_0) and the last epoch are always
    evaluated.
    """

    epochs: int
    steps_per_epoch: int
    evaluate_every_updates: int | None
    checkpoint_every_epochs: int | None
    checkpoint_every_updates: int | None

    def _passes_multiple(self, epoch: int, every: int) -> bool:
        return epoch * self.steps_per_epoch // every > (epoch - 1) * self.steps_per_epoch // every

    def evaluates(self, epoch: int) -> bool:
        if epoch in (0, self.epochs) or self.evaluate_every_updates is None:
            return True
        return self._passes_multiple(epoch, self.evaluate_every_updates)

    def checkpoints(self, epoch: int) -> bool:
        if self.checkpoint_every_updates is not None:
            return self._passes_multiple(epoch, self.checkpoint_every_updates)
        return self.checkpoint_every_epochs is not None and epoch % self.checkpoint_every_epochs == 0


def cadence(config: WalkConfig, steps_per_epoch: int) -> Cadence:
    """The run's evaluation and checkpoint cadence: the config's, or the defaults.

    Defaults: SGD evaluates every epoch and checkpoints every ``checkpoint_every_epochs``;
    a full-batch run (one update per epoch) evaluates every
    ``DEFAULT_FULL_BATCH_EVALUATE_EVERY_UPDATES`` updates and checkpoints every
    ``max(checkpoint_every_epochs, DEFAULT_FULL_BATCH_CHECKPOINT_EVERY_UPDATES)`` updates.
    ``checkpoint_every_epochs = None`` (never) wins over the full-batch default.
    """
    evaluate_every = config.evaluate_every_updates
    checkpoint_every = config.checkpoint_every_updates
    if is_full_batch(config):
        if evaluate_every is None:
            evaluate_every = DEFAULT_FULL_BATCH_EVALUATE_EVERY_UPDATES
        if checkpoint_every is None and config.checkpoint_every_epochs is not None:
            checkpoint_every = max(config.checkpoint_every_epochs, DEFAULT_FULL_BATCH_CHECKPOINT_EVERY_UPDATES)
    return Cadence(config.epochs, steps_per_epoch, evaluate_every, config.checkpoint_every_epochs, checkpoint_every)


def learning_rate_schedule(config: WalkConfig, steps_per_epoch: int) -> lr_schedules.LRSchedule:
    """The config's schedule as ``step -> lr``, its epoch-valued parameters turned into steps.

    The binding lives here, with the names it reads, so that the schedules stay pure
    functions of numbers that know nothing of a run's configuration.
    """
    total_steps = config.epochs * steps_per_epoch
    if config.lr_schedule == "constant":
        return functools.partial(lr_schedules.constant, lr=config.lr)
    if config.lr_schedule == "step":
        milestones = tuple(epoch * steps_per_epoch for epoch in config.lr_milestones)
        return functools.partial(lr_schedules.step_decay, lr=config.lr, gamma=config.lr_gamma, milestones=milestones)
    assert config.lr_max is not None  # validate() requires it for these schedules
    step_size = lr_schedules.epochs_to_steps(config.lr_step_epochs, steps_per_epoch)
    if config.lr_schedule == "cyclical":
        return functools.partial(lr_schedules.triangular, base_lr=config.lr, max_lr=config.lr_max, step_size=step_size)
    anneal_epochs = config.lr_step_epochs if config.lr_anneal_epochs is None else config.lr_anneal_epochs
    return functools.partial(
        lr_schedules.trapezoid,
        base_lr=config.lr,
        max_lr=config.lr_max,
        ramp_steps=step_size,
        anneal_steps=lr_schedules.epochs_to_steps(anneal_epochs, steps_per_epoch),
        total_steps=total_steps,
        final_lr=config.lr_final,
    )


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping in a JSON or TOML (``.toml``) config file; keys use underscores."""
    values = read_mapping_file(path, "config file", ConfigError)
    # Accept the CLI spelling (track-epochs) as well as the field name (track_epochs).
    return {key.replace("-", "_"): value for key, value in values.items()}


__all__ = [
    "Cadence",
    "ConfigError",
    "DATA_FIELDS",
    "DEVICES",
    "FIELD_NAMES",
    "LR_SCHEDULES",
    "OPTIMIZERS",
    "WalkConfig",
    "cadence",
    "data_key",
    "field_default",
    "is_full_batch",
    "learning_rate_schedule",
    "read_config_file",
]
