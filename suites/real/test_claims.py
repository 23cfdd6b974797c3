"""Claims C1-C10 on Fashion-MNIST on the CPU: one test per check of ``claims.PARTS``.

Slow (minutes): runs only with ``--runslow``. Needs Fashion-MNIST (Debian's
``dataset-fashion-mnist``, ``--sgdwalk-data-root`` or ``SGDWALK_DATA_ROOT``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from sgdwalk.claims.engine import ClaimCheck, RunCache, run_check
from sgdwalk.training.data import DatasetNotFoundError, resolve_dataset
from suites.real.claims import PARTS, SEEDS

pytestmark = pytest.mark.slow


def _cases() -> list[object]:
    cases = []
    for part, base, settings, checks in PARTS:
        for check in checks:
            marks = [pytest.mark.claim(check.claim_id)]
            if check.not_reproduced is not None:
                marks.append(pytest.mark.xfail(strict=True, reason=check.not_reproduced))
            cases.append(pytest.param(part, base, settings, check, marks=marks, id=check.name))
    return cases


@pytest.mark.parametrize(("part", "base", "settings", "check"), _cases())
def test_claim(
    part: str,
    base: object,
    settings: dict[str, dict[str, object]],
    check: ClaimCheck,
    run_cache: RunCache,
    claim: object,
    sgdwalk_data_root: Path | None,
) -> None:
    config = base if sgdwalk_data_root is None else dataclasses.replace(base, data_root=str(sgdwalk_data_root))  # type: ignore[type-var]
    try:
        resolve_dataset(config.data, config.data_root)  # type: ignore[attr-defined]
    except DatasetNotFoundError as error:
        pytest.skip(str(error))
    run_check(check, config, settings, SEEDS, run_cache, claim)  # type: ignore[arg-type]
