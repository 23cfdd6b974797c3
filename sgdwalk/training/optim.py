"""Optimizers the paper compares beyond torch.optim.SGD: full-batch GD and GD plus isotropic noise.

Full-batch GD is torch.optim.SGD fed the exact mean gradient. The authors summed chunk
means, so their effective learning rate was (number of chunks) × the nominal one; here the
chunks are weighted by their share of the set, which gives the mean exactly.

The isotropic noise is added to the gradient: each step uses g + ξ with ξ ~ N(0, σ² I),
where σ² is a *variance* (the standard deviation passed to the sampler is σ). The authors'
code passed the variance where torch expects a standard deviation; this module does not.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from typing import ClassVar, overload

import torch
from torch import nn
from torch.optim import Optimizer

from sgdwalk.instrument.geometry import flat_gradient, trainable_parameters
from sgdwalk.instrument.measurement import PerSampleLoss


def full_batch_gradient_(
    model: nn.Module,
    loss_fn: PerSampleLoss,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    chunk_size: int,
) -> float:
    """Set every parameter's ``.grad`` to the exact mean gradient over (inputs, targets).

    Accumulates chunk by chunk, each weighted by its number of samples over the total, so
    the result does not depend on ``chunk_size`` (except through batch norm's batch
    statistics, which are per chunk in train mode). Returns the mean loss.
    """
    total = inputs.shape[0]
    if total == 0:
        raise ValueError("cannot take a gradient over an empty set")
    if targets.shape[0] != total:
        raise ValueError(f"inputs ({total}) and targets ({targets.shape[0]}) differ in length")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    for parameter in trainable_parameters(model):
        parameter.grad = None
    loss_sum = 0.0
    for start in range(0, total, chunk_size):
        chunk_targets = targets[start : start + chunk_size]
        chunk_losses = loss_fn(model(inputs[start : start + chunk_size]), chunk_targets)
        # A scalar (already averaged) loss would be divided by the set size a second time.
        if chunk_losses.ndim != 1 or chunk_losses.shape[0] != chunk_targets.shape[0]:
            raise ValueError(
                f"the loss function must return one loss per sample (shape [{chunk_targets.shape[0]}]), "
                f"got {tuple(chunk_losses.shape)}"
            )
        (chunk_losses.sum() / total).backward()
        loss_sum += float(chunk_losses.detach().double().sum())
    return loss_sum / total


class NoisyGD(Optimizer):
    """θ ← θ − η (g + λ_wd θ + ξ), ξ ~ N(0, σ² I) drawn from the optimizer's own generator.

    The generator is seeded and separate from torch's global one, so adding noise does not
    shift any other random stream of the training run. There is one per device the
    parameters live on, made at its first draw; ``generator_states`` and
    ``load_generator_states`` carry them through a checkpoint (``state_dict`` holds only
    torch's per-parameter state and hyper-parameters).
    """

    # The decay enters the gradient (λ_wd θ above): what a tracker handed this optimizer reads
    # (sgdwalk.instrument.optimizer_groups.DECAY_FORM_ATTRIBUTE).
    weight_decay_form: ClassVar[str] = "coupled"

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        lr: float,
        noise_variance: float,
        weight_decay: float = 0.0,
        seed: int = 0,
    ) -> None:
        if lr <= 0:
            raise ValueError(f"lr must be positive, got {lr}")
        if noise_variance < 0:
            raise ValueError(f"noise_variance is a variance and must be non-negative, got {noise_variance}")
        super().__init__(params, {"lr": lr, "noise_variance": noise_variance, "weight_decay": weight_decay})
        self.seed = seed
        self._generators: dict[torch.device, torch.Generator] = {}

    def _generator(self, device: torch.device) -> torch.Generator:
        if device not in self._generators:
            generator = torch.Generator(device=device)
            generator.manual_seed(self.seed)
            self._generators[device] = generator
        return self._generators[device]

    def generator_states(self) -> dict[str, torch.Tensor]:
        """The state of each device's noise generator, keyed by the device's name ("cpu", "cuda:0")."""
        return {str(device): generator.get_state() for device, generator in self._generators.items()}

    def load_generator_states(self, states: Mapping[str, torch.Tensor]) -> None:
        """Continue the noise streams saved by ``generator_states``: the next draws are the
        ones the saved optimizer would have made. A device not in ``states`` starts from the seed."""
        self._generators = {}
        for name, state in states.items():
            device = torch.device(name)
            generator = torch.Generator(device=device)
            generator.set_state(state.cpu())  # get_state is a CPU byte tensor whatever the device
            self._generators[device] = generator

    # The overloads of torch.optim.Optimizer.step: no closure, no loss.
    @overload
    def step(self, closure: None = None) -> None: ...

    @overload
    def step(self, closure: Callable[[], float]) -> float: ...

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            standard_deviation = float(group["noise_variance"]) ** 0.5
            for parameter in group["params"]:
                if parameter.grad is None:
                    continue
                direction = parameter.grad.clone()
                if group["weight_decay"]:
                    direction.add_(parameter, alpha=group["weight_decay"])
                noise = torch.randn(
                    parameter.shape,
                    generator=self._generator(parameter.device),
                    device=parameter.device,
                    dtype=parameter.dtype,
                )
                direction.add_(noise, alpha=standard_deviation)
                parameter.add_(direction, alpha=-group["lr"])
        return loss


def gradient_coordinate_variance(
    model: nn.Module,
    loss_fn: PerSampleLoss,
    minibatches: Iterable[tuple[torch.Tensor, torch.Tensor]],
) -> torch.Tensor:
    """Per-coordinate variance of minibatch gradients (unbiased, over the given batches).

    Works on a copy of the model inside a forked random state: the estimate is set-up, and
    must not move the run's batch-norm statistics, gradients or random streams.
    """
    probe = copy.deepcopy(model)
    # Welford's running mean and sum of squared deviations: memory of two parameter vectors
    # in float64 whatever the number of batches (stacking 50 VGG-11 gradients takes ~4 GB).
    count = 0
    mean: torch.Tensor | None = None
    squared_deviations: torch.Tensor | None = None
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        for inputs, targets in minibatches:
            for parameter in trainable_parameters(probe):
                parameter.grad = None
            loss_fn(probe(inputs), targets).mean().backward()
            gradient = flat_gradient(probe).double()
            count += 1
            if mean is None or squared_deviations is None:
                mean, squared_deviations = gradient.clone(), torch.zeros_like(gradient)
                continue
            delta = gradient - mean
            mean += delta / count
            squared_deviations += delta * (gradient - mean)
    if count < 2 or squared_deviations is None:
        raise ValueError(f"a variance needs at least 2 minibatches, got {count}")
    return squared_deviations / (count - 1)


def isotropic_noise_variance(coordinate_variance: torch.Tensor, scale: float) -> float:
    """σ² = c · max over coordinates of the gradient variance (the paper's recipe)."""
    if scale < 0:
        raise ValueError(f"scale must be non-negative, got {scale}")
    return float(scale * coordinate_variance.max())
