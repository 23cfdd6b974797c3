"""The claims the suite checks, as data: one id, one statement, one source each.

Ids are used everywhere (``@pytest.mark.claim("C3")``, the JSON report, the README
table), so the registry is the single place that says which ids exist. Statements follow
``docs/claims.md`` (paper claims C1-C11), the synthetic checks S1-S9 that
test the instrument on landscapes with exact answers, and X1-X3, checks beyond the paper.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

__all__ = ["CLAIMS", "Claim", "get_claim"]

PAPER = "A Walk with SGD (Xing et al. 2018, arXiv 1802.08770)"
QUADRATIC_THEORY = "quadratic theory (docs/theory.md)"
EDGE_OF_STABILITY = "Cohen et al. 2021, arXiv 2103.00065"
ADAPTIVE_EDGE_OF_STABILITY = "Cohen et al. 2022, arXiv 2207.14484"


@dataclass(frozen=True)
class Claim:
    """One checkable statement; ``source`` says where it comes from."""

    id: str
    statement: str
    source: str


_CLAIM_LIST: tuple[Claim, ...] = (
    # --- The paper's claims (docs/claims.md#paper-claims-c1-c11).
    Claim(
        "C1",
        "Full-batch GD: after an initial phase the consecutive-gradient cosine is strongly "
        "negative (near -1) and most segments have an interior floor",
        PAPER,
    ),
    Claim(
        "C2",
        "SGD: most segments have an interior floor; the cosine is less negative than under GD",
        PAPER,
    ),
    Claim(
        "C3",
        "At a fixed learning rate, a larger batch gives a more negative mean cosine",
        PAPER,
    ),
    Claim(
        "C4",
        "At a fixed batch size, changing the learning rate moves the mean cosine much less "
        "than changing the batch size does",
        PAPER,
    ),
    Claim(
        "C5",
        "For the same number of updates, a smaller batch ends farther from initialization; SGD farther than GD",
        PAPER,
    ),
    Claim(
        "C6",
        "At a fixed batch size, a larger learning rate gives a larger mean height above the floor",
        PAPER,
    ),
    Claim(
        "C7",
        "No barriers are crossed early in training (epoch 1); later crossings are few and small next to the loss",
        PAPER,
    ),
    Claim(
        "C8",
        "The valley floor along SGD's path has more ups and downs than along GD's",
        PAPER,
    ),
    Claim(
        "C9",
        "GD plus isotropic noise trains worse than GD (stalls) and ends farther from "
        "initialization with a larger parameter norm; SGD trains best",
        PAPER,
    ),
    Claim("C10", "The sharpness falls during training under SGD", PAPER),
    Claim(
        "C11",
        "A trapezoid schedule does as well as or better than cyclical schedules; cycles are redundant",
        PAPER,
    ),
    # --- Synthetic checks: the instrument against closed forms on known landscapes.
    Claim(
        "S1",
        "On a quadratic, GD damps each eigendirection component by the factor (1 - eta*lambda) per step",
        QUADRATIC_THEORY,
    ),
    Claim(
        "S2",
        "The tracked consecutive-gradient cosine equals the quadratic closed form",
        QUADRATIC_THEORY,
    ),
    Claim(
        "S3",
        "A segment has an interior floor iff eta*lambda_eff > 1, and the measured alpha* and "
        "depth match their closed forms",
        QUADRATIC_THEORY,
    ),
    Claim(
        "S4",
        "No barrier is reported on convex landscapes; bump barriers are flagged with their "
        "height; barrier detection is symmetric under reversing the segment",
        QUADRATIC_THEORY,
    ),
    Claim(
        "S5",
        "Isotropic noise diffuses along flat directions like sqrt(t); Hessian-shaped noise does not",
        QUADRATIC_THEORY,
    ),
    Claim(
        "S6",
        "SGD's stationary loss on the noisy quadratic matches the exact formula, and (eta, B) "
        "vs (k*eta, k*B) agree only for small eta*lambda",
        QUADRATIC_THEORY,
    ),
    Claim(
        "S7",
        "The mean height grows with eta at fixed B, and the mean cosine falls as B grows",
        QUADRATIC_THEORY,
    ),
    Claim(
        "S8",
        "The Hessian trace (Hutch++) and top-k eigenvalues measured on a quadratic are its known "
        "spectrum, the trace's standard error covering at its nominal rate",
        QUADRATIC_THEORY,
    ),
    Claim(
        "S9",
        "The gradient noise scale B_simple on the noisy quadratic is its closed form tr(Sigma)/|G|^2, "
        "its standard error covering at its nominal rate",
        QUADRATIC_THEORY,
    ),
    # --- Checks beyond the paper.
    Claim(
        "X1",
        "Edge of stability: under GD the sharpness rises to about 2/eta while the cosine sits near -1",
        EDGE_OF_STABILITY,
    ),
    Claim(
        "X2",
        "SGD's stationary behaviour on a noisy quadratic depends on more than eta/B once eta*lambda is not small",
        QUADRATIC_THEORY,
    ),
    Claim(
        "X3",
        "Edge of stability of an adaptive optimizer: under full-batch Adam the preconditioned sharpness rises "
        "to (2 + 2 beta1)/((1 - beta1) eta) and hovers there",
        ADAPTIVE_EDGE_OF_STABILITY,
    ),
)

# Read-only so a test cannot rewrite a claim for the rest of the session.
CLAIMS: Mapping[str, Claim] = MappingProxyType({claim.id: claim for claim in _CLAIM_LIST})


def get_claim(claim_id: str) -> Claim:
    """The registered claim ``claim_id``; KeyError naming the known ids otherwise."""
    try:
        return CLAIMS[claim_id]
    except KeyError:
        known = ", ".join(CLAIMS)
        raise KeyError(f"unknown claim id {claim_id!r}; known ids: {known}") from None
