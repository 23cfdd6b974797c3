"""A claim check as data: ``ClaimCheck`` (settings, statistic, relation, bound and its reason)
and the recorder a check writes its ledger entries to."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, get_args

from sgdwalk.claims.report import RELATIONS, Relation
from sgdwalk.claims.statistics import Estimate
from sgdwalk.runs.walk_result import WalkResult

RunsBySetting = Mapping[str, Sequence[WalkResult]]
StatisticFunction = Callable[[RunsBySetting], Estimate]

# What of a run a check's statistic reads, from most to least (``measured_for`` gives the
# run that records just that): "records", every measured step of its settings; "sharpness",
# only the steps at which the top Hessian eigenvalue is estimated; "history", only the
# evaluations and distances recorded at epoch ends (nothing measured).
Reads = Literal["records", "sharpness", "history"]
READS: tuple[Reads, ...] = get_args(Reads)


@dataclass(frozen=True, kw_only=True)
class ClaimCheck:
    """One pass/fail check of one claim, the same in every tier that runs it.

    Attributes:
        claim_id: the claim (C1-C11) this check tests.
        name: short name, unique within the claim (e.g. "batch-cosine"); ``key`` adds the claim.
        statistic_name: what is measured, in words, with its direction.
        settings: names of the settings (keys of a tier's setting table) the statistic needs.
        statistic: per-seed statistic with its interval, from the runs of those settings.
        relation / bound: the statistic must satisfy ``statistic relation bound``.
        bound_reason: why this bound, stated before the first run.
        reads: what of its settings' runs the statistic reads (``Reads``). A run made only
            for checks that read less measures less: it follows the same trajectory (the
            instrument never changes it) at a fraction of the cost.
        beside: record fields the ledger notes per setting and measured step beside the
            statistic (the gradient noise scale beside the batch-size claims): what the
            claim is about, read with it, never part of the verdict.
    """

    claim_id: str
    name: str
    statistic_name: str
    settings: tuple[str, ...]
    statistic: StatisticFunction
    relation: Relation
    bound: float
    bound_reason: str
    reads: Reads = "records"
    beside: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.relation not in RELATIONS:
            raise ValueError(f"{self.key}: relation must be one of {RELATIONS}, got {self.relation!r}")
        if self.reads not in READS:
            raise ValueError(f"{self.key}: reads must be one of {READS}, got {self.reads!r}")

    @property
    def key(self) -> str:
        """The check's name in the claims table, e.g. "C3-batch-cosine"."""
        return f"{self.claim_id}-{self.name}"


class ClaimRecorderLike(Protocol):
    def setting(self, **values: object) -> None: ...

    def note(self, text: str) -> None: ...

    def check(
        self,
        name: str,
        value: float,
        bound: float,
        relation: Relation,
        *,
        interval: tuple[float, float] | None = None,
        detail: str = "",
    ) -> None: ...
