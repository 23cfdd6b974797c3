"""What an optimizer's parameter groups say about its next step: its learning rates, and the
weight decay that enters the gradient it uses.

Coupled decay (torch's SGD, Adam, RMSprop, …, and this repository's NoisyGD) adds wd·θ to the
gradient inside the step, so the gradient the update uses is g + wd·θ. Decoupled decay
(AdamW, or a group with ``decoupled_weight_decay`` set, as Adam, NAdam and RAdam take)
shrinks θ apart from the gradient, which stays g. Each group has its own decay and rate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch


def learning_rates(optimizer: torch.optim.Optimizer) -> tuple[float, ...]:
    """Every group's ``lr``, in group order (groups without one left out)."""
    return tuple(float(group["lr"]) for group in optimizer.param_groups if "lr" in group)


def common_rate(rates: Sequence[float]) -> float | None:
    """The one rate all groups share; None when they differ or there is none."""
    return rates[0] if rates and all(rate == rates[0] for rate in rates) else None


def decay_is_decoupled(optimizer: torch.optim.Optimizer, group: Mapping[str, Any]) -> bool:
    """The group's decay shrinks θ apart from the gradient (AdamW's) instead of entering it."""
    return isinstance(optimizer, torch.optim.AdamW) or bool(group.get("decoupled_weight_decay", False))


def coupled_decay(optimizer: torch.optim.Optimizer, parameters: Sequence[torch.Tensor]) -> tuple[float, ...]:
    """Per parameter of ``parameters``, the decay its group adds to its gradient (0.0 when the
    decay is decoupled, absent, or the parameter is in no group: the step adds nothing)."""
    by_parameter: dict[int, float] = {}
    for group in optimizer.param_groups:
        decay = 0.0 if decay_is_decoupled(optimizer, group) else float(group.get("weight_decay", 0.0))
        for parameter in group["params"]:
            by_parameter[id(parameter)] = decay
    return tuple(by_parameter.get(id(parameter), 0.0) for parameter in parameters)


@dataclass(frozen=True)
class GroupSettings:
    """The settings of one step as a record holds them.

    ``lr``: the groups' common rate (None when they differ); ``group_lrs``: every group's rate
    when they differ (None when they agree); ``coupled_decay``: per parameter, as ``coupled_decay``.
    """

    lr: float | None
    group_lrs: tuple[float, ...] | None
    coupled_decay: tuple[float, ...]


def group_settings(optimizer: torch.optim.Optimizer, parameters: Sequence[torch.Tensor]) -> GroupSettings:
    """What ``optimizer``'s next step uses, for the walk over ``parameters``."""
    rates = learning_rates(optimizer)
    lr = common_rate(rates)
    return GroupSettings(
        lr=lr,
        group_lrs=rates if lr is None and rates else None,
        coupled_decay=coupled_decay(optimizer, parameters),
    )
