"""Which parameters a walk moves, fixed when the tracker begins.

Every vector the tracker keeps (θ_0, the previous gradient, the previous update, θ_t) lists
the trainable parameters in ``model.parameters()`` order, and every later use pairs its
entries with the parameters trainable then, by position. Where the trainable set changes
during a run (a layer unfrozen, or frozen, in a fine-tuning schedule; a module replaced;
parameters converted to another dtype), those positions name other parameters: a swap of
two equal layers keeps every shape, and the distance from θ_0 would then be taken between
different layers' weights, silently. So the set is fixed when the tracker begins and looked
at again before every step whose kept vectors are read (a measured step, or the step before
one), and a change is refused there before the optimizer moves anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from sgdwalk.instrument.geometry import named_trainable_parameters
from sgdwalk.instrument.optimizer_groups import Optimizers, optimizers_of


def _is_sharded(parameter: torch.Tensor) -> bool:
    """Whether ``parameter`` is a DTensor, of which this process holds a shard."""
    if not torch.distributed.is_available():
        return False
    from torch.distributed.tensor import DTensor

    return isinstance(parameter, DTensor)


@dataclass(frozen=True)
class TrainableSet:
    """The trainable parameters of a model, by name and tensor, in ``model.parameters()`` order.

    The tensors themselves are held (not their ids), so that a parameter replaced by a new
    one is told apart even where the allocator hands the new one the old one's address.
    """

    names: tuple[str, ...]
    parameters: tuple[nn.Parameter, ...]
    # Each parameter's (shape, dtype, device) when the set was taken: a parameter's storage
    # can be swapped under the same tensor object (``module.to(dtype)``, ``p.data = ...``).
    layouts: tuple[tuple[torch.Size, torch.dtype, torch.device], ...]

    @classmethod
    def of(cls, model: nn.Module) -> TrainableSet:
        """The model's trainable parameters now. ValueError when there are none, or when
        they do not share one dtype and one device (every kept vector and every measured
        point is one tensor of one dtype on one device)."""
        named = named_trainable_parameters(model)
        sharded = [name for name, p in named if _is_sharded(p)]
        if sharded:
            # Found by a second pair of eyes: FSDP's fully_shard trained until the first measured
            # step, and then stopped there in torch's "mixed torch.Tensor and DTensor" error.
            raise ValueError(
                f"sgdwalk measures parameters that every process holds whole, and {_some(sharded)} are "
                "sharded across processes (DTensor: FSDP's fully_shard, tensor parallelism): measure the walk "
                "under DistributedDataParallel, or in one process"
            )
        kinds: dict[tuple[torch.dtype, torch.device], list[str]] = {}
        for name, p in named:
            kinds.setdefault((p.dtype, p.device), []).append(name)
        if len(kinds) > 1:
            found = "; ".join(f"{dtype} on {device}: {_some(names)}" for (dtype, device), names in kinds.items())
            raise ValueError(
                "sgdwalk measures a walk whose trainable parameters share one dtype and one device, "
                f"and this model's do not ({found}): convert them to one (model.float()), or freeze "
                "the others (requires_grad_(False)) if they are not trained"
            )
        return cls(
            names=tuple(name for name, _ in named),
            parameters=tuple(p for _, p in named),
            layouts=tuple((p.shape, p.dtype, p.device) for _, p in named),
        )

    def change_in(self, model: nn.Module) -> str | None:
        """How the model's trainable parameters now differ from this set, in words; None
        where they are the same tensors, in the same order and layout."""
        named = named_trainable_parameters(model, required=False)
        if len(named) == len(self.names) and all(
            name == own_name and p is own and (p.shape, p.dtype, p.device) == layout
            for (name, p), own_name, own, layout in zip(named, self.names, self.parameters, self.layouts, strict=True)
        ):
            return None
        now = {name: p for name, p in named}
        then = dict(zip(self.names, zip(self.parameters, self.layouts, strict=True), strict=True))
        changes = []
        started = [name for name in now if name not in then]
        stopped = [name for name in then if name not in now]
        if started:
            changes.append(f"now trainable: {_some(started)}")
        if stopped:
            changes.append(f"no longer trainable: {_some(stopped)}")
        replaced = [name for name in now if name in then and now[name] is not then[name][0]]
        if replaced:
            changes.append(f"replaced by new tensors: {_some(replaced)}")
        relaid = [
            f"{name} {_layout(then[name][1])} -> {_layout((p.shape, p.dtype, p.device))}"
            for name, p in now.items()
            if name in then and p is then[name][0] and (p.shape, p.dtype, p.device) != then[name][1]
        ]
        if relaid:
            changes.append(f"changed: {_some(relaid)}")
        if not changes:
            changes.append("the same parameters in another order")
        return "; ".join(changes)

    def check_saved(self, saved_names: Sequence[str]) -> None:
        """ValueError unless a checkpoint's vectors, which list ``saved_names``, list this set."""
        if tuple(saved_names) == self.names:
            return
        differing = sorted(set(saved_names).symmetric_difference(self.names))
        raise ValueError(
            "the checkpoint's vectors list other trainable parameters than this model has "
            f"({len(saved_names)} then, {len(self.names)} now; differing: {_some(differing) or 'their order'}): "
            "resume with the parameters trainable as they were when it was saved"
        )

    def outside(self, optimizer: Optimizers) -> list[str]:
        """The names of this set's parameters that are in none of the groups of ``optimizer``
        (or of any of several)."""
        held = {id(p) for each in optimizers_of(optimizer) for group in each.param_groups for p in group["params"]}
        return [name for name, p in zip(self.names, self.parameters, strict=True) if id(p) not in held]

    def check_held_by(self, optimizer: Optimizers) -> None:
        """ValueError unless the groups of ``optimizer`` (of several together) hold every
        parameter of the walk: its step is then the whole update, and its groups say every
        parameter's decay."""
        outside = self.outside(optimizer)
        if outside:
            raise ValueError(
                f"the optimizer's groups do not hold every trainable parameter ({_some(outside)} are in none): "
                "its step is not the whole update (a second optimizer's step would fall between two records, "
                "so each segment would end before it and no cosine would be paired), and the gradient "
                "recorded would hold parameters it does not move. Take every optimizer's step inside one "
                "block and hand it them all, `with tracker.step(optimizer=(first, second)): first.step(); "
                "second.step()`, or freeze what no optimizer trains (requires_grad_(False))"
            )

    def check_moves_only_the_walk(self, optimizer: Optimizers, model: nn.Module) -> None:
        """ValueError where the groups of ``optimizer`` hold a parameter outside the walk (frozen,
        or not the model's) that its step may move: torch's optimizers step every parameter with
        a ``.grad``, a zero one too, which moves it where the gradient is not zero, the optimizer
        keeps state for it (momentum, Adam's averages) or its group decays it; the segment
        θ_t → θ_{t+1} would leave those weights out."""
        walk = {id(p) for p in self.parameters}
        moved = [
            p
            for each in optimizers_of(optimizer)
            for group in each.param_groups
            for p in group["params"]
            if id(p) not in walk
            and p.grad is not None
            and (bool(each.state.get(p)) or bool(group.get("weight_decay")) or _not_zero(p.grad))
        ]
        if not moved:
            return
        names = {id(p): name for name, p in model.named_parameters()}
        listed = [names.get(id(p), f"one of shape {tuple(p.shape)} outside the model") for p in moved]
        # Found by a second pair of eyes: a layer frozen after zero_grad(set_to_none=False) kept a
        # zero gradient and its momentum, so SGD moved it on; the segments mixed two models.
        raise ValueError(
            f"the optimizer's step would move parameters outside the walk ({_some(listed)}): they are not "
            "trainable (or not the model's), yet hold a .grad, and torch's optimizers step every parameter "
            "with one (its momentum and decay too), so the segment θ_t → θ_{t+1} would leave out weights that "
            "moved. Set their .grad to None (zero_grad(set_to_none=True), torch's default, after freezing), or "
            "take them out of the optimizer"
        )


def _not_zero(gradient: torch.Tensor) -> bool:
    # A sparse gradient holds entries only where it is not zero (or was summed to zero).
    return bool(gradient.detach().coalesce().values().any()) if gradient.is_sparse else bool(gradient.detach().any())


def _layout(layout: tuple[torch.Size, torch.dtype, torch.device]) -> str:
    shape, dtype, device = layout
    return f"{tuple(shape)} {dtype} on {device}"


# Names listed in a message before the rest are counted: a transformer unfrozen whole has hundreds.
_NAMES_SHOWN = 6


def _some(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_NAMES_SHOWN])
    return shown if len(names) <= _NAMES_SHOWN else f"{shown} and {len(names) - _NAMES_SHOWN} more"


__all__ = ["TrainableSet"]
