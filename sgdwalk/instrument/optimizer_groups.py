"""What an optimizer's parameter groups say about its next step: its learning rates, and the
weight decay that enters the gradient it uses.

Coupled decay (torch's SGD, Adam, RMSprop, …, and this repository's NoisyGD) adds wd·θ to the
gradient inside the step, so the gradient the update uses is g + wd·θ. Decoupled decay
(AdamW, Adafactor, Muon, or a group with ``decoupled_weight_decay`` set, as Adam, NAdam and
RAdam take) shrinks θ apart from the gradient, which stays g. Each group has its own decay
and rate.

A group's ``weight_decay`` does not say which of the two it is: the optimizer's step does.
So the form comes from, in this order: the class's own word (``DECAY_FORM_ATTRIBUTE``);
torch's optimizer classes, as their steps were read (``_COUPLED``, ``_DECOUPLED``,
``_FLAGGED``), for a subclass only while it keeps torch's step (one that writes its own step
may apply the decay its own way); the optimizer a wrapper holds as ``.optimizer`` (a
Lookahead's inner step makes the gradient); and the loop's word, the tracker's
``weight_decay_form``. Any other optimizer with a decay (Lion, bitsandbytes' AdamW8bit, a
hand-written one) is refused: guessing would make ``grad_norm`` and the cosines silently off
by wd·θ. An optimizer that ascends (``maximize=True``) is refused: its update uses −g, and
the walk measures descent of the loss.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, get_args

import torch

# An optimizer class not among torch's says how its step applies the decay with this class
# attribute, "coupled" or "decoupled" (this repository's NoisyGD does); a loop says it of the
# optimizers it hands the tracker with the tracker's ``weight_decay_form``.
DECAY_FORM_ATTRIBUTE: Final = "weight_decay_form"
DecayForm = Literal["coupled", "decoupled"]
DECAY_FORMS: Final[tuple[str, ...]] = get_args(DecayForm)

# torch's optimizers whose step adds the group's weight_decay·θ to the gradient (read in their
# source: ``grad = grad.add(param, alpha=weight_decay)``).
_COUPLED: Final[tuple[type[torch.optim.Optimizer], ...]] = (
    torch.optim.SGD,
    torch.optim.RMSprop,
    torch.optim.Adagrad,
    torch.optim.Adadelta,
    torch.optim.Adamax,
    torch.optim.ASGD,
)
# Those whose step shrinks θ by (1 − lr·weight_decay) apart from the gradient. Checked before
# _FLAGGED: torch's AdamW is a subclass of Adam.
_DECOUPLED: Final[tuple[type[torch.optim.Optimizer], ...]] = (
    torch.optim.AdamW,
    torch.optim.Adafactor,
    torch.optim.Muon,
)
# Those that do either, as the group's ``decoupled_weight_decay`` says.
_FLAGGED: Final[tuple[type[torch.optim.Optimizer], ...]] = (torch.optim.Adam, torch.optim.NAdam, torch.optim.RAdam)
# Those whose groups have no decay at all (no ``weight_decay`` key): nothing enters the gradient.
_UNDECAYED: Final[tuple[type[torch.optim.Optimizer], ...]] = (
    torch.optim.Rprop,
    torch.optim.LBFGS,
    torch.optim.SparseAdam,
)


def unwrapped_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    """The ``torch.optim.Optimizer`` whose groups and step are the update's, inside a wrapper
    that is no optimizer in its own right.

    accelerate's ``AcceleratedOptimizer`` is an ``Optimizer`` subclass that never ran
    ``Optimizer.__init__`` (no step hooks of its own) and only calls the step of the one it
    holds as ``.optimizer``: that one is the optimizer. A wrapper that ran
    ``Optimizer.__init__`` (a Lookahead written so, or Lightning's ``LightningOptimizer``,
    which takes its optimizer's class and state) is kept: its step is the update. Attaching
    needs more than this (``attachable_optimizer``)."""
    while not _is_hookable(optimizer) and isinstance(getattr(optimizer, "optimizer", None), torch.optim.Optimizer):
        optimizer = optimizer.optimizer
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"no torch optimizer inside {type(optimizer).__name__}: the tracker attaches to one")
    return optimizer


# Wrappers without step hooks of their own whose step is their optimizer's step and nothing
# more, by the package that defines them: attached through the optimizer they hold.
_DELEGATING_WRAPPER_PACKAGES: Final = ("accelerate",)


def attachable_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    """The optimizer whose step hooks ``attach`` registers: ``optimizer`` itself, or the one a
    known delegating wrapper (accelerate's) holds. A wrapper without hooks of its own whose
    step may do more than its inner one's (a Lookahead that never ran ``Optimizer.__init__``
    pulls the weights back after it) is refused: attached to the inner optimizer, the pull-back
    would fall outside every measured step."""
    if _is_hookable(optimizer) or not isinstance(getattr(optimizer, "optimizer", None), torch.optim.Optimizer):
        return unwrapped_optimizer(optimizer)
    package = type(optimizer).__module__.split(".")[0]
    if package in _DELEGATING_WRAPPER_PACKAGES:
        return unwrapped_optimizer(optimizer)
    raise TypeError(
        f"{type(optimizer).__name__} holds {type(optimizer.optimizer).__name__} as .optimizer and has no step hooks "
        "of its own (it never ran Optimizer.__init__): the tracker cannot tell whether its step is the inner "
        "optimizer's alone, so it cannot attach. Measure its step in a with block: "
        "`with tracker.step(optimizer=wrapper): wrapper.step()`"
    )


def _is_hookable(optimizer: Any) -> bool:
    """An optimizer that ran ``Optimizer.__init__``: it has step hooks of its own."""
    return isinstance(optimizer, torch.optim.Optimizer) and hasattr(optimizer, "_optimizer_step_pre_hooks")


# What a step is handed: one optimizer, or those whose steps together make one update (Muon's
# on the matrices and AdamW's on the rest, taken in one ``with tracker.step()`` block).
Optimizers = torch.optim.Optimizer | Sequence[torch.optim.Optimizer]


def optimizers_of(given: Optimizers) -> tuple[torch.optim.Optimizer, ...]:
    """``given`` as a tuple of torch optimizers, each unwrapped (``unwrapped_optimizer``)."""
    items = tuple(given) if isinstance(given, (list, tuple)) else (given,)
    if not items:
        raise ValueError("no optimizer given: pass one, or the optimizers whose steps make the update")
    found = tuple(unwrapped_optimizer(item) for item in items)
    if len({id(optimizer) for optimizer in found}) < len(found):
        raise ValueError("an optimizer is given twice: each of the update's optimizers once")
    return found


def learning_rates(optimizer: Optimizers) -> tuple[float, ...]:
    """Every group's ``lr``, in group order, optimizer after optimizer (groups without one left out)."""
    return tuple(
        float(group["lr"]) for each in optimizers_of(optimizer) for group in each.param_groups if "lr" in group
    )


def common_rate(rates: Sequence[float]) -> float | None:
    """The one rate all groups share; None when they differ or there is none."""
    return rates[0] if rates and all(rate == rates[0] for rate in rates) else None


def _keeps_torch_step(optimizer: torch.optim.Optimizer, torch_class: type[torch.optim.Optimizer]) -> bool:
    """Whether the optimizer's step is ``torch_class``'s (hooks torch wraps around it aside)."""
    return inspect.unwrap(type(optimizer).step) is inspect.unwrap(torch_class.step)


# torch's classes by the form their steps apply, most derived first (AdamW is an Adam);
# "flagged": as each group's ``decoupled_weight_decay`` says.
_TORCH_FORMS: Final[tuple[tuple[tuple[type[torch.optim.Optimizer], ...], str], ...]] = (
    (_DECOUPLED, "decoupled"),
    (_FLAGGED, "flagged"),
    (_COUPLED, "coupled"),
    (_UNDECAYED, "coupled"),
)


def _torch_form(optimizer: torch.optim.Optimizer) -> str | None:
    """The form torch's own class of the optimizer applies (None: not one, or a subclass that
    writes its own step)."""
    for classes, form in _TORCH_FORMS:
        for torch_class in classes:
            if isinstance(optimizer, torch_class):
                return form if _keeps_torch_step(optimizer, torch_class) else None
    return None


def decay_form(optimizer: torch.optim.Optimizer, declared_form: DecayForm | None = None) -> str | None:
    """How the optimizer's step applies its groups' decay: "coupled", "decoupled", "flagged"
    (per group, ``decoupled_weight_decay``), or None where nothing says (see the module
    docstring for the order; ``declared_form``: the loop's word, the last resort)."""
    own = getattr(type(optimizer), DECAY_FORM_ATTRIBUTE, None)
    if own in DECAY_FORMS:
        return str(own)
    torch_form = _torch_form(optimizer)
    if torch_form is not None:
        return torch_form
    inner = getattr(optimizer, "optimizer", None)
    inner_form = decay_form(inner) if isinstance(inner, torch.optim.Optimizer) and inner is not optimizer else None
    return inner_form if inner_form is not None else declared_form


def _group_decouples(form: str, group: Mapping[str, Any]) -> bool:
    return form == "decoupled" or (form == "flagged" and bool(group.get("decoupled_weight_decay", False)))


def _decays(optimizer: torch.optim.Optimizer) -> list[float]:
    return sorted({float(group.get("weight_decay", 0.0)) for group in optimizer.param_groups})


def check_readable(optimizer: torch.optim.Optimizer, declared_form: DecayForm | None = None) -> None:
    """Refuse, before its step, an optimizer whose next step's gradient the records could not
    hold: one that ascends, or one with a decay whose form nothing says (``decay_form``;
    ``declared_form``: the tracker's ``weight_decay_form``). A wrapper is read as what it wraps."""
    optimizer = unwrapped_optimizer(optimizer)
    name = type(optimizer).__name__
    if any(group.get("maximize", False) for group in optimizer.param_groups):
        raise ValueError(
            f"{name} has maximize=True: its update ascends along −g, and the walk measures the descent of the "
            "loss; to ascend an objective, minimise its negative (maximize=False), so the loss measured is the one "
            "descended"
        )
    if decay_form(optimizer, declared_form) is not None or not any(_decays(optimizer)):
        return
    raise ValueError(
        f"{name} is not one of torch's optimizers (or writes its own step) and its groups have weight_decay "
        f"{_decays(optimizer)}: the tracker cannot tell whether its step adds wd·θ to the gradient (coupled, as "
        "SGD's) or shrinks θ apart from it (decoupled, as AdamW's and Lion's), and the recorded gradient, its norm "
        "and the cosines depend on it. Say which: WalkTracker(..., weight_decay_form='decoupled') or "
        f"'coupled', or on its class, {DECAY_FORM_ATTRIBUTE} = 'decoupled'"
    )


def coupled_decay(
    optimizer: Optimizers, parameters: Sequence[torch.Tensor], declared_form: DecayForm | None = None
) -> tuple[float, ...]:
    """Per parameter of ``parameters``, the decay its group adds to its gradient (0.0 when the
    decay is decoupled, absent, or the parameter is in no group: the step adds nothing); with
    several optimizers, the group of whichever holds the parameter. ``declared_form``: the
    form of an optimizer nothing else says it of (``check_readable`` refuses one with a decay
    without it)."""
    by_parameter: dict[int, float] = {}
    for each in optimizers_of(optimizer):
        check_readable(each, declared_form)
        form = decay_form(each, declared_form) or "coupled"  # no form: no group has a decay
        for group in each.param_groups:
            decay = 0.0 if _group_decouples(form, group) else float(group.get("weight_decay", 0.0))
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


def group_settings(
    optimizer: Optimizers, parameters: Sequence[torch.Tensor], declared_form: DecayForm | None = None
) -> GroupSettings:
    """What ``optimizer``'s next step uses, for the walk over ``parameters`` (``declared_form``:
    as ``coupled_decay``'s)."""
    rates = learning_rates(optimizer)
    lr = common_rate(rates)
    return GroupSettings(
        lr=lr,
        group_lrs=rates if lr is None and rates else None,
        coupled_decay=coupled_decay(optimizer, parameters, declared_form),
    )


# An optimizer that unscales inside its own step (torch's fused Adam, AdamW and SGD:
# ``_step_supports_amp_scaling``) is not unscaled by ``GradScaler.step`` first: the scaler sets
# ``grad_scale`` and ``found_inf`` on it for the length of that step, and the kernel divides the
# gradients by the scale, or leaves the parameters as they are when an entry was not finite.
# The gradients a step hook reads are then still scaled. Each reading is a host sync, so each
# is asked for only where it is used.


def amp_inverse_scale(optimizer: torch.optim.Optimizer) -> float | None:
    """What the optimizer's current step multiplies the gradients by (None: they carry no
    scale): GradScaler's own unscale factor (``unscale_``: the float64 reciprocal, cast to
    float32), so the gradient read is the one its unscale_ would make; exact for its powers of two."""
    scale = getattr(optimizer, "grad_scale", None)
    return float(scale.double().reciprocal().float()) if isinstance(scale, torch.Tensor) else None


def amp_step_skipped(optimizer: torch.optim.Optimizer) -> bool:
    """Whether the optimizer's current step will not move the parameters: its scaler found an
    inf or a NaN."""
    found_inf = getattr(optimizer, "found_inf", None)
    return isinstance(found_inf, torch.Tensor) and bool(found_inf.sum() > 0)
