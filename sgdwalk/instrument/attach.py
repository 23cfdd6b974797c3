"""A tracker attached to an optimizer: its step hooks stand in for ``with tracker.step()``.

    tracker.attach(optimizer)
    for inputs, targets in batches:
        optimizer.zero_grad()
        loss = criterion(model(inputs), targets)
        loss.backward()
        tracker.note_loss(loss)  # optional: the minibatch loss in the records
        optimizer.step()

torch calls the pre-hook inside ``optimizer.step()`` before the update and the post-hook
right after it: the same two moments as ``before_step`` / ``after_step``, so the records are
those of the ``with`` block (tested bitwise). The learning rates and the weight decay are
read from the optimizer's parameter groups at the pre-hook (``optimizer_groups``).
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.hooks import RemovableHandle

from sgdwalk.instrument.optimizer_groups import common_rate, learning_rates

if TYPE_CHECKING:
    from sgdwalk.instrument.tracker import WalkTracker


def learning_rate_of(optimizer: torch.optim.Optimizer) -> float | None:
    """The learning rate the optimizer's next step uses: its groups' common ``lr``; None when
    the groups differ (the record then holds each in ``group_lrs``) or have none."""
    return common_rate(learning_rates(optimizer))


def begin_step(tracker: WalkTracker, optimizer: torch.optim.Optimizer, loss: float | torch.Tensor | None) -> None:
    """The tracker's ``begin_optimizer_step`` with the rates and the decay read from ``optimizer``."""
    tracker.begin_optimizer_step(minibatch_loss=loss, optimizer=optimizer)


def _has_closure(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    # torch hands the hook step's arguments with the optimizer itself first.
    return any(callable(value) for value in (*args[1:], *kwargs.values()))


StepArguments = tuple[tuple[Any, ...], dict[str, Any]]


def begin_once_the_gradient_is_made(
    args: tuple[Any, ...], kwargs: dict[str, Any], begin: Callable[[], None]
) -> StepArguments | None:
    """For an optimizer's step pre-hook: run ``begin`` when the gradient the update uses exists.

    A step without a closure already has it: ``begin`` runs now and the arguments stay (None).
    A step with a closure (Lightning's: forward, backward, then its gradient clipping) makes it
    inside ``step``, after this hook: the closure is wrapped so that ``begin`` runs right after
    its first call returns (later calls, as LBFGS makes, are the optimizer's own line search),
    and the hook returns the arguments with the wrapped closure, as torch lets a pre-hook do.
    """
    closure_at = [index for index, value in enumerate(args) if index > 0 and callable(value)]
    closure_key = [key for key, value in kwargs.items() if callable(value)]
    if not closure_at and not closure_key:
        begin()
        return None
    closure: Callable[[], Any] = args[closure_at[0]] if closure_at else kwargs[closure_key[0]]
    begun = False

    def closure_then_begin() -> Any:
        nonlocal begun
        result = closure()
        if not begun:
            begun = True
            begin()
        return result

    if closure_at:
        index = closure_at[0]
        return (*args[:index], closure_then_begin, *args[index + 1 :]), kwargs
    return args, {**kwargs, closure_key[0]: closure_then_begin}


class OptimizerAttachment:
    """The two hooks of ``WalkTracker.attach``; ``remove()`` (or leaving a ``with`` block) detaches."""

    def __init__(
        self,
        tracker: WalkTracker,
        optimizer: torch.optim.Optimizer,
        *,
        on_remove: Callable[[OptimizerAttachment], None] | None = None,
    ) -> None:
        self.tracker = tracker
        self.optimizer = optimizer
        self._on_remove = on_remove
        self._handles: list[RemovableHandle] = [
            optimizer.register_step_pre_hook(self._before),
            optimizer.register_step_post_hook(self._after),
        ]

    @property
    def attached(self) -> bool:
        return bool(self._handles)

    def _before(self, optimizer: torch.optim.Optimizer, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        tracker = self.tracker
        loss = tracker.take_noted_loss()
        if _has_closure(args, kwargs) and not tracker.closed:
            raise RuntimeError(
                "an attached tracker cannot measure optimizer.step(closure): the gradient is made inside "
                "the step, after the hook, and where a closure is first called (at θ_t, or at a perturbed "
                "point as SAM's) is the optimizer's business. Remove the attachment and make the gradient at "
                "θ_t before the step: `loss = closure()`, then `with tracker.step(minibatch_loss=loss, "
                "optimizer=optimizer): optimizer.step(closure)`"
            )
        begin_step(tracker, optimizer, loss)

    def _after(self, optimizer: torch.optim.Optimizer, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.tracker.end_optimizer_step()

    def remove(self) -> None:
        """Detach: the optimizer's steps are no longer measured. Safe to call twice."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        if self._on_remove is not None:
            self._on_remove(self)

    def __enter__(self) -> OptimizerAttachment:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.remove()
