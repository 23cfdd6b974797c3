"""The statistics that decide every claim verdict, on hand-made runs with known answers.

Each test builds a few ``WalkResult``s by hand (records, history, config), works out the
per-seed values the statistic must give, and compares with ``mean_with_t_interval`` of those
values (its interval is pinned against scipy in ``test_statistics.py``). No network trains:
the whole file runs in a second.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytest

from sgdwalk.claims.check import ClaimCheck
from sgdwalk.claims.engine import decisive_value, run_check
from sgdwalk.claims.report import Relation
from sgdwalk.claims.run_cache import RunCache
from sgdwalk.claims.statistics import Estimate, mean_with_t_interval, seeds_for_replication
from sgdwalk.claims.tuned import SettingOverrides, TunedSetting
from sgdwalk.claims.window_statistics import (
    consecutive_step_windows,
    floor_turning_fraction,
    fraction,
    last_history,
    mean_field,
)
from sgdwalk.instrument.record import StepRecord
from sgdwalk.runs.runner import WalkResult
from sgdwalk.training.config import WalkConfig
from suites import claim_statistics as cs
from suites import profiles
from suites.claims_table import CHECKS, NOT_REPRODUCED, At
from suites.tier_plan import DataChoice, cases, paper_data, part_settings

# Per-seed values are computed here by hand and there by numpy: the same float64 sums in
# another order.
FLOAT64_RTOL = 1e-12


# ------------------------------------------------------------------------ hand-made runs
def record(step: int, **fields: Any) -> StepRecord:
    """A measured step with neutral values; ``fields`` set what a test is about."""
    values: dict[str, Any] = {
        "lr": 0.1,
        "minibatch_loss": None,
        "loss_start": 1.0,
        "loss_end": 0.9,
        "floor": 0.8,
        "alpha_star": 0.5,
        "interior_floor": True,
        "floor_refined": 0.8,
        "alpha_star_refined": 0.5,
        "height_start": 0.2,
        "height_end": 0.1,
        "barrier": False,
        "barrier_height": 0.0,
        "barrier_alpha": None,
        "cosine": 0.0,
        "grad_norm": 1.0,
        "step_length": 0.1,
        "distance_from_init": 0.0,
        "param_norm": 1.0,
        "sharpness": None,
        "segment_alphas": (),
        "segment_losses": (),
    }
    values.update(fields)
    return StepRecord(step=step, **values)


def run(
    records: Sequence[StepRecord] = (),
    history: Sequence[Mapping[str, Any]] = (),
    **config: Any,
) -> WalkResult:
    return WalkResult(
        config=WalkConfig(track_epochs=(), **config),
        records=list(records),
        history=[dict(entry) for entry in history],
        windows=[],
        status="completed",
        divergence=None,
        steps_per_epoch=1,
    )


def windows_of(field: str, *windows: tuple[range, Sequence[float]]) -> list[StepRecord]:
    """Records whose ``field`` takes the given values on the given steps."""
    return [
        record(step, **{field: value}) for steps, values in windows for step, value in zip(steps, values, strict=True)
    ]


def assert_estimate(estimate: Estimate, per_seed: Sequence[float]) -> None:
    expected = mean_with_t_interval(per_seed)
    assert estimate.per_seed == pytest.approx(per_seed, rel=FLOAT64_RTOL)
    assert (estimate.value, estimate.low, estimate.high) == pytest.approx(
        (expected.value, expected.low, expected.high), rel=FLOAT64_RTOL
    )


# ------------------------------------------------------------------------ windows of a run
def test_windows_split_at_gaps_in_step_order() -> None:
    shuffled = run([record(s) for s in (11, 0, 12, 1, 10, 2, 13)])
    assert [[r.step for r in w] for w in consecutive_step_windows(shuffled.records)] == [[0, 1, 2], [10, 11, 12, 13]]
    assert [r.step for r in cs.early(shuffled)] == [0, 1, 2]
    assert [r.step for r in cs.late(shuffled)] == [10, 11, 12, 13]
    # 7 measured steps: the second half is the last 4 (the middle one belongs to it).
    assert [r.step for r in cs.second_half(shuffled)] == [10, 11, 12, 13]
    assert sorted(r.step for r in cs.in_window(shuffled, (1, 11))) == [1, 2, 10]
    with pytest.raises(ValueError, match="no measured steps"):
        cs.in_window(shuffled, (3, 10))


def test_mean_field_skips_missing_and_non_finite_values() -> None:
    records = [record(0, cosine=None), record(1, cosine=-0.5), record(2, cosine=math.nan), record(3, cosine=-0.25)]
    assert mean_field(records, "cosine") == -0.375
    with pytest.raises(ValueError, match="no finite cosine"):
        mean_field(records[:1], "cosine")


def test_fraction_counts_records_and_refuses_none() -> None:
    records = [record(0, barrier=True), record(1), record(2), record(3, barrier=True)]
    assert fraction(records, lambda r: r.barrier) == 0.5
    with pytest.raises(ValueError):
        fraction([], lambda r: r.barrier)


@pytest.mark.parametrize(
    ("floors", "expected"),
    [
        ((0.0, 1.0, 2.0, 3.0), 0.0),  # only climbs
        ((3.0, 2.0, 1.0, 0.0), 0.0),  # only descends
        ((0.0, 1.0, 0.0, 1.0), 1.0),  # reverses at every step
        ((0.0, 1.0, 2.0, 1.0), 0.5),  # up, up, down: one reversal in two chances
        ((0.0, 1.0, 1.0, 0.0), 0.0),  # a flat step is no reversal on either side
    ],
)
def test_floor_turning_fraction(floors: tuple[float, ...], expected: float) -> None:
    # Given out of order: the turning is counted along the steps.
    records = [record(step, floor=floor) for step, floor in reversed(list(enumerate(floors)))]
    assert floor_turning_fraction(records) == expected


def test_floor_turning_needs_three_floors() -> None:
    with pytest.raises(ValueError, match="at least 3"):
        floor_turning_fraction([record(0), record(1)])


def test_history_lookups() -> None:
    result = run(
        history=[
            {"step": 5, "train_loss": 0.5, "val_accuracy": 0.7},
            {"step": 10, "train_loss": 0.4, "val_accuracy": None},
        ]
    )
    assert last_history(result, "train_loss") == 0.4
    # The last epoch that recorded it, not the last epoch.
    assert last_history(result, "val_accuracy") == 0.7
    assert cs.history_at_update(result, "train_loss", 5) == 0.5
    with pytest.raises(ValueError, match="recorded no param_norm"):
        last_history(result, "param_norm")
    with pytest.raises(ValueError, match="at update 7"):
        cs.history_at_update(result, "train_loss", 7)


# ------------------------------------------------------------------- one setting, per seed
def test_window_mean_and_interior_floor_fraction() -> None:
    runs = {
        "gd-edge": [
            run(windows_of("cosine", (range(0, 4), (0.0, 0.0, -0.6, -1.0)))),
            run(windows_of("cosine", (range(0, 4), (1.0, 1.0, -0.2, -0.4)))),
        ],
        "sgd": [
            run([record(0, interior_floor=False), record(1), record(5), record(6)]),
            run([record(0), record(1), record(5, interior_floor=False), record(6, interior_floor=False)]),
        ],
    }
    assert_estimate(cs.window_mean("gd-edge", "cosine", cs.second_half)(runs), [-0.8, -0.3])
    assert_estimate(cs.interior_floor_fraction("sgd", cs.all_measured)(runs), [0.75, 0.5])
    assert_estimate(cs.interior_floor_fraction("sgd", cs.late)(runs), [1.0, 0.0])


def test_barrier_statistics() -> None:
    runs = {
        "sgd": [
            # First window: one barrier; last window: 1 of 4; the largest is 0.03 of its loss.
            run(
                [
                    record(0, barrier=True, barrier_height=0.03, loss_start=1.0),
                    record(1),
                    record(8),
                    record(9),
                    record(10, barrier=True, barrier_height=0.01, loss_start=0.5),
                    record(11),
                ]
            ),
            # No barrier at all: 0 crossed, fraction 0, relative height 0.
            run([record(0), record(1), record(8), record(9), record(10), record(11)]),
            # Two barriers in the first window, none late; relative height 0.004 / 0.2.
            run(
                [
                    record(0, barrier=True, barrier_height=0.004, loss_start=0.2),
                    record(1, barrier=True, barrier_height=0.001, loss_start=1.0),
                    record(8),
                    record(9),
                    record(10),
                    record(11),
                ]
            ),
        ]
    }
    assert_estimate(cs.early_barriers("sgd")(runs), [1.0, 0.0, 2.0])
    assert_estimate(cs.late_barrier_fraction("sgd")(runs), [0.25, 0.0, 0.0])
    assert_estimate(cs.relative_barrier_height("sgd")(runs), [0.03, 0.0, 0.02])


def test_sharpness_drop_is_first_minus_last_estimate() -> None:
    runs = {
        "sgd": [
            run([record(40, sharpness=3.0), record(0, sharpness=10.0), record(1), record(41)]),
            run([record(0, sharpness=4.0), record(1), record(40, sharpness=5.0)]),
        ]
    }
    assert_estimate(cs.sharpness_drop("sgd")(runs), [7.0, -1.0])
    with pytest.raises(ValueError, match="two sharpness"):
        cs.sharpness_drop("sgd")({"sgd": [run([record(0, sharpness=1.0), record(1)])]})


# ------------------------------------------------------------ two settings, paired by seed
def test_window_mean_gap_pairs_seeds() -> None:
    # The first windows (±9) must not enter a gap of the last windows.
    runs = {
        "high": [
            run(windows_of("height_start", (range(0, 2), (9.0, 9.0)), (range(10, 12), (0.3, 0.5)))),
            run(windows_of("height_start", (range(0, 2), (9.0, 9.0)), (range(10, 12), (0.2, 0.2)))),
        ],
        "low": [
            run(windows_of("height_start", (range(0, 2), (-9.0, -9.0)), (range(10, 12), (0.1, 0.1)))),
            run(windows_of("height_start", (range(0, 2), (-9.0, -9.0)), (range(10, 12), (0.25, 0.35)))),
        ],
    }
    assert_estimate(cs.window_mean_gap("high", cs.late, "low", cs.late, "height_start")(runs), [0.3, -0.1])


def test_final_gap_and_gap_after_gd_updates() -> None:
    sgd = [
        run(history=[{"step": 2, "distance_from_init": 1.0}, {"step": 4, "distance_from_init": 3.0}]),
        run(history=[{"step": 2, "distance_from_init": 2.0}, {"step": 4, "distance_from_init": 2.5}]),
    ]
    gd = [
        run(history=[{"step": 1, "distance_from_init": 0.1}, {"step": 2, "distance_from_init": 0.5}], epochs=2),
        run(history=[{"step": 1, "distance_from_init": 0.2}, {"step": 2, "distance_from_init": 0.4}], epochs=2),
    ]
    runs = {"sgd": sgd, "gd": gd}
    assert_estimate(cs.final_gap("distance_from_init", "sgd", "gd")(runs), [2.5, 2.1])
    # After GD's 2 updates (its epochs), not at SGD's end.
    assert_estimate(cs.gap_after_gd_updates("distance_from_init", "sgd", "gd")(runs), [0.5, 1.6])


def test_final_minus_best_takes_the_best_other_per_seed() -> None:
    def accuracies(*values: float) -> list[WalkResult]:
        return [run(history=[{"step": 1, "val_accuracy": value}]) for value in values]

    runs = {
        "lr-trapezoid": accuracies(0.90, 0.80),
        "lr-cyclical-short": accuracies(0.85, 0.84),
        "lr-cyclical-long": accuracies(0.88, 0.70),
    }
    statistic = cs.final_minus_best("val_accuracy", "lr-trapezoid", ("lr-cyclical-short", "lr-cyclical-long"))
    assert_estimate(statistic(runs), [0.90 - 0.88, 0.80 - 0.84])


def test_floor_turning_gap_compares_equally_many_last_steps() -> None:
    # SGD's last window: 5 steps, reversing at every step over its last 3 (turning 1.0 there).
    sgd = [
        run(
            [
                record(0, floor=0.0),
                record(1, floor=0.0),
                record(2, floor=0.0),
                *[record(10 + i, floor=f) for i, f in enumerate((0.0, 1.0, 2.0, 1.0, 2.0))],
            ]
        )
    ]
    # GD's last window: 3 steps, descending (turning 0.0).
    gd = [run([record(0, floor=3.0), record(1, floor=2.0), record(2, floor=1.0)])]
    # On SGD's whole window the turning would be 2/3; on its last 3 steps it is 1.
    assert_estimate(cs.floor_turning_gap("sgd", "gd")({"sgd": sgd, "gd": gd}), [1.0])


def test_batch_minus_lr_effect_reads_the_batch_sweeps_last_window() -> None:
    window_a, window_b, window_c = range(0, 2), range(8, 10), range(18, 20)
    batch_steps = ((0, 2), (8, 10))

    def batch_run(late_cosine: float) -> WalkResult:
        return run(
            windows_of("cosine", (window_a, (5.0, 5.0)), (window_b, (late_cosine, late_cosine))),
            track_steps=batch_steps,
            epochs=1,
        )

    def lr_run(cosine_b: float) -> WalkResult:
        # A run measured past the batch sweep: its own last window (±7) must not be read.
        return run(
            windows_of(
                "cosine",
                (window_a, (5.0, 5.0)),
                (window_b, (cosine_b, cosine_b)),
                (window_c, (7.0, -7.0 if cosine_b > 0 else 7.0)),
            )
        )

    runs = {
        "batch-small": [batch_run(-0.1), batch_run(-0.2)],
        "batch-reference": [batch_run(-0.5), batch_run(-0.1)],
        "lr-high": [lr_run(0.3), lr_run(-0.3)],
        "lr-low": [lr_run(0.2), lr_run(-0.25)],
    }
    statistic = cs.batch_minus_lr_effect(("batch-small", "batch-reference"), ("lr-high", "lr-low"))
    # |-0.1 - -0.5| - |0.3 - 0.2| and |-0.2 - -0.1| - |-0.3 - -0.25|.
    assert_estimate(statistic(runs), [0.4 - 0.1, 0.1 - 0.05])


# ------------------------------------------------------------------------- the engine
def _gap_check(relation: Relation = ">", bound: float = 1.0) -> ClaimCheck:
    """A check of the final train-loss gap between settings "high" and "low"."""
    return ClaimCheck(
        claim_id="C9",
        name="hand-made",
        statistic_name="loss gap",
        settings=("high", "low"),
        statistic=cs.final_gap("train_loss", "high", "low"),
        relation=relation,
        bound=bound,
        bound_reason="a test",
    )


class HandMadeCache(RunCache):
    """A run cache that answers every config with a hand-made run instead of training."""

    def __init__(self, make: Any) -> None:
        super().__init__()
        self.make = make

    def compute(self, config: WalkConfig) -> WalkResult:
        return self.make(config)


class ListRecorder:
    def __init__(self) -> None:
        self.settings: dict[str, object] = {}
        self.notes: list[str] = []
        self.checks: list[tuple[str, float, float, str, tuple[float, float] | None]] = []

    def setting(self, **values: object) -> None:
        self.settings.update(values)

    def note(self, text: str) -> None:
        self.notes.append(text)

    def check(
        self,
        name: str,
        value: float,
        bound: float,
        relation: Relation,
        *,
        interval: tuple[float, float] | None = None,
        detail: str = "",
    ) -> None:
        self.checks.append((name, value, bound, relation, interval))


@pytest.mark.parametrize(("relation", "end"), [(">", "low"), (">=", "low"), ("<", "high"), ("<=", "high")])
def test_run_check_records_the_conservative_end(relation: Relation, end: str) -> None:
    # Final train loss = lr × seed / 1000: seeds 1, 2, 4 at lr 0.2 minus lr 0.1 give 1e-4 × seed.
    cache = HandMadeCache(
        lambda c: run(history=[{"step": 1, "train_loss": c.lr * c.seed / 1000}], lr=c.lr, seed=c.seed)
    )
    check = _gap_check(relation, bound=0.0)
    recorder = ListRecorder()
    estimate = run_check(check, WalkConfig(), {"high": {"lr": 0.2}, "low": {"lr": 0.1}}, (1, 2, 4), cache, recorder)
    assert_estimate(estimate, [1e-4, 2e-4, 4e-4])
    ((name, value, bound, recorded_relation, interval),) = recorder.checks
    assert value == getattr(estimate, end) == decisive_value(estimate, relation)
    assert (bound, recorded_relation, interval) == (0.0, relation, estimate.interval)
    assert name == f"loss gap (95% CI {end} end)"
    assert len(cache.results) == 6  # two settings x three seeds, each run once


def test_a_check_refuses_an_unknown_relation() -> None:
    with pytest.raises(ValueError, match="relation"):
        ClaimCheck(
            claim_id="C1",
            name="x",
            statistic_name="x",
            settings=(),
            statistic=cs.final_gap("a", "b", "c"),
            relation="=",  # type: ignore[arg-type]  # deliberately not a relation
            bound=0.0,
            bound_reason="",
        )


def test_without_verdict_a_failing_bound_is_noted_and_finiteness_asserted() -> None:
    cache = HandMadeCache(
        lambda c: run(history=[{"step": 1, "train_loss": c.lr * c.seed / 1000}], lr=c.lr, seed=c.seed)
    )
    recorder = ListRecorder()
    estimate = run_check(
        _gap_check(), WalkConfig(), {"high": {"lr": 0.2}, "low": {"lr": 0.1}}, (1, 2, 4), cache, recorder, verdict=False
    )
    ((name, value, bound, relation, interval),) = recorder.checks
    # The statistic (gaps of 1e-4 x seed) is far below the bound 1: noted, not asserted.
    assert (bound, relation, interval) == (math.inf, "<", estimate.interval)
    assert value == max(abs(estimate.value), abs(estimate.low), abs(estimate.high)) < math.inf
    assert "must be finite" in name
    assert any(
        note.startswith("bound not asserted at this size: ") and note.endswith("> 1 would not hold")
        for note in recorder.notes
    )


@pytest.mark.parametrize("broken", [math.nan, math.inf, -math.inf])
def test_without_verdict_a_non_finite_statistic_fails(broken: float) -> None:
    from sgdwalk.claims.engine import record_finite
    from sgdwalk.claims.pytest_plugin import ClaimRecorder
    from sgdwalk.claims.registry import CLAIMS

    # A non-finite end in any position (the mean first, the high end last) must fail the test.
    for estimate in (Estimate(broken, 0.0, 1.0, (0.0,)), Estimate(0.5, 0.0, broken, (0.0,))):
        with pytest.raises(AssertionError, match="must be finite"):
            record_finite(_gap_check(), estimate, ClaimRecorder(CLAIMS["C9"], "gpu"))
    record_finite(_gap_check(), Estimate(0.5, 0.0, 1.0, (0.0,)), ClaimRecorder(CLAIMS["C9"], "gpu"))


# ------------------------------------------------------------------------- the table
def test_check_keys_are_unique() -> None:
    keys = [check.key for check in CHECKS]
    assert len(keys) == len(set(keys))


@pytest.mark.parametrize("name", sorted(profiles.PROFILES))
def test_every_check_a_part_runs_finds_its_settings(name: str) -> None:
    profile = profiles.PROFILES[name]
    for part_name, part in profile.parts.items():
        settings = part_settings(part, profile.sizes[part_name])
        for check in part.checks:
            assert set(check.settings) <= set(settings), (name, part_name, check.key)


@pytest.mark.parametrize(("profile", "baseline"), [("real", "real.json"), ("tiny", "gpu-tiny.json")])
def test_test_ids_are_those_of_the_baselines(profile: str, baseline: str) -> None:
    """``sgdwalk claims compare`` matches a report with its baseline by test id."""
    import json
    from pathlib import Path

    document = json.loads((Path(__file__).parents[1] / "suites" / "baselines" / baseline).read_text())
    ids = {entry["test"].split("[", 1)[1].rstrip("]") for entry in document["claims"]}
    plan = profiles.PROFILES[profile]
    data = {name: paper_data(part) for name, part in plan.parts.items()}
    assert {case.id for case in cases(plan, "cpu", data)} == ids


def test_declared_non_reproductions_must_be_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(profiles, "NOT_REPRODUCED", {**NOT_REPRODUCED, At("real", "conv", "C10-sharpness"): "x"})
    with pytest.raises(ValueError, match="which no profile runs"):
        profiles._check_not_reproduced()


def test_non_reproductions_are_strict_only_where_measured() -> None:
    real = profiles.PROFILES["real"]
    data = {name: paper_data(part) for name, part in real.parts.items()}
    measured = {case.id: case for case in cases(real, "cpu", data)}
    elsewhere = {case.id: case for case in cases(real, "cuda", data)}
    assert measured["C9-mlp-noise-loss"].not_reproduced is not None
    assert measured["C9-mlp-noise-loss"].strict and not elsewhere["C9-mlp-noise-loss"].strict
    assert measured["C9-mlp-noise-norm"].not_reproduced is None


def test_the_tiny_profile_asserts_no_verdict(monkeypatch: pytest.MonkeyPatch) -> None:
    tiny = profiles.PROFILES["tiny"]
    fallback = {name: DataChoice("fashion-mnist", part.image_size, True, "") for name, part in tiny.parts.items()}
    assert all(not case.verdict and case.not_reproduced is None for case in cases(tiny, "cpu", fallback))
    assert all(
        case.verdict
        for name in ("real", "smoke", "paper")
        for case in cases(
            profiles.PROFILES[name], "cpu", {n: paper_data(p) for n, p in profiles.PROFILES[name].parts.items()}
        )
    )
    monkeypatch.setattr(profiles, "NOT_REPRODUCED", {At("tiny", "mlp", "C9-sgd-best"): "x"})
    with pytest.raises(ValueError, match="asserts no verdicts"):
        profiles._check_not_reproduced()


def test_a_profile_must_change_lr_and_batch_by_one_factor_for_c4() -> None:
    real = profiles.PROFILES["real"]
    skewed = dataclasses.replace(real.parts["mlp"], lr_high=0.1)
    with pytest.raises(ValueError, match="same factor"):
        dataclasses.replace(real, parts={**real.parts, "mlp": skewed})


def test_every_statistic_of_the_table_is_finite_on_hand_made_runs() -> None:
    """Every check end to end on runs that measure every window a profile measures."""
    profile = profiles.PROFILES["tiny"]
    rng = np.random.default_rng(0)
    for part_name, part in profile.parts.items():
        size = profile.sizes[part_name]
        base = WalkConfig(track_epochs=())
        for check in part.checks:
            runs = {}
            for setting in check.settings:
                overrides = part_settings(part, size)[setting]
                assert not isinstance(overrides, TunedSetting)  # the tiny profile tunes nothing
                config = dataclasses.replace(base, **{"track_steps": size.windows, **overrides})
                steps = sorted({s for start, stop in config.track_steps for s in range(start, stop)})
                runs[setting] = [
                    run(
                        [
                            record(
                                s,
                                cosine=float(rng.uniform(-1, 1)),
                                floor=float(rng.uniform()),
                                sharpness=float(rng.uniform(1, 9)) if s in (0, size.sharpness_every) else None,
                            )
                            for s in steps
                        ],
                        history=[
                            {
                                "step": e,
                                "train_loss": float(rng.uniform()),
                                "val_accuracy": float(rng.uniform()),
                                "distance_from_init": float(rng.uniform()),
                                "param_norm": float(rng.uniform()),
                            }
                            for e in range(1, max(config.epochs, size.updates) + 1)
                        ],
                        track_steps=config.track_steps,
                        epochs=config.epochs,
                    )
                    for _ in profile.seeds
                ]
            estimate = check.statistic(runs)
            assert all(math.isfinite(v) for v in (estimate.value, estimate.low, estimate.high)), check.key


# ------------------------------------------------------------ the measurement's share
def test_height_statistics_say_what_share_of_their_spread_the_measurement_set_explains() -> None:
    # Late windows: heights 0.3/0.5 (se 0.02, 0.04) and 0.2/0.2 (se 0.01, 0.03) for "high";
    # 0.1/0.1 (se 0.02, 0.02) and 0.25/0.35 (se 0.04, 0.04) for "low".
    def seeded(heights: tuple[float, float], errors: tuple[float, float]) -> WalkResult:
        late = [
            record(10 + i, height_start=h, height_start_se=e)
            for i, (h, e) in enumerate(zip(heights, errors, strict=True))
        ]
        return run([record(0, height_start_se=0.5), record(1, height_start_se=0.5), *late])

    runs = {
        "high": [seeded((0.3, 0.5), (0.02, 0.04)), seeded((0.2, 0.2), (0.01, 0.03))],
        "low": [seeded((0.1, 0.1), (0.02, 0.02)), seeded((0.25, 0.35), (0.04, 0.04))],
    }
    one = cs.window_mean("high", "height_start", cs.late)(runs)
    # The steps' errors of one window perfectly correlated: their mean; independent: sqrt(Σ se²) / m.
    assert one.measurement_se == pytest.approx((0.03, 0.02), rel=FLOAT64_RTOL)
    independent = (math.hypot(0.02, 0.04) / 2, math.hypot(0.01, 0.03) / 2)
    assert one.measurement_se_independent == pytest.approx(independent, rel=FLOAT64_RTOL)
    spread = np.var([0.4, 0.2], ddof=1)
    assert one.measurement_share_range == pytest.approx(
        (np.mean(np.square(independent)) / spread, np.mean([0.03**2, 0.02**2]) / spread)
    )
    gap = cs.window_mean_gap("high", cs.late, "low", cs.late, "height_start")(runs)
    # Two settings' errors added as independent.
    assert gap.measurement_se == pytest.approx((math.hypot(0.03, 0.02), math.hypot(0.02, 0.04)), rel=FLOAT64_RTOL)
    assert gap.measurement_se_independent == pytest.approx(
        (
            math.hypot(independent[0], math.hypot(0.02, 0.02) / 2),
            math.hypot(independent[1], math.hypot(0.04, 0.04) / 2),
        ),
        rel=FLOAT64_RTOL,
    )
    # A field measured without sampling error (the cosine) carries no share.
    cosine = cs.window_mean("high", "cosine", cs.late)(runs)
    assert cosine.measurement_se is None and cosine.measurement_share_range is None


def test_run_check_notes_the_measurement_share_in_the_report() -> None:
    # Late heights 0.1 × seed, each step's se 0.01: share = 0.01² / var(0.1, 0.2, 0.4).
    cache = HandMadeCache(
        lambda c: run([record(10, height_start=0.1 * c.seed, height_start_se=0.01)], lr=c.lr, seed=c.seed)
    )
    check = ClaimCheck(
        claim_id="C6",
        name="hand-made",
        statistic_name="height",
        settings=("sgd",),
        statistic=cs.window_mean("sgd", "height_start", cs.late),
        relation=">",
        bound=0.0,
        bound_reason="a test",
    )
    recorder = ListRecorder()
    run_check(check, WalkConfig(), {"sgd": {}}, (1, 2, 4), cache, recorder)
    share = 0.01**2 / float(np.var([0.1, 0.2, 0.4], ddof=1))  # one step a window: both ways agree
    expected = (
        f"measurement set's share of the seed-to-seed variance: {share:.1%} (steps' errors independent) to {share:.1%}"
    )
    assert any(note.startswith(expected) for note in recorder.notes)


def test_run_check_notes_the_fields_read_beside_it_per_setting_and_step() -> None:
    # B_simple 100·seed at step 0 and 200·seed at step 5 (SE 10 and 30) at batch 50; none at batch 500.
    def noisy(config: WalkConfig) -> WalkResult:
        records = [
            record(0, gradient_noise_scale=100.0 * config.seed, gradient_noise_scale_se=10.0),
            record(5, gradient_noise_scale=200.0 * config.seed, gradient_noise_scale_se=30.0),
        ]
        return run(records if config.batch_size == 50 else [record(0)], batch_size=config.batch_size)

    check = ClaimCheck(
        claim_id="C3",
        name="hand-made",
        statistic_name="cosine",
        settings=("small", "large"),
        statistic=cs.window_mean_gap("small", cs.late, "large", cs.late, "cosine"),
        relation="<",
        bound=1.0,
        bound_reason="a test",
        beside=("gradient_noise_scale",),
    )
    recorder = ListRecorder()
    table = {"small": {"batch_size": 50}, "large": {"batch_size": 500}}
    run_check(check, WalkConfig(), table, (1, 3), HandMadeCache(noisy), recorder)
    (note,) = [note for note in recorder.notes if note.startswith("gradient_noise_scale beside")]
    assert note == (
        "gradient_noise_scale beside the statistic, mean over seeds: small (batch 50, lr 0.1): "
        "step 0 200 (2 seeds, sd 141.4, SE 10); step 5 400 (2 seeds, sd 282.8, SE 30)"
    )


def test_the_real_tier_records_the_noise_scale_of_its_sgd_settings_at_the_sharpness_steps() -> None:
    real = profiles.PROFILES["real"]
    for part_name, batch in (("mlp", 50), ("conv", 32)):
        settings = part_settings(real.parts[part_name], real.sizes[part_name])
        for name in ("sgd", "lr-high", "lr-low", "batch-small", "batch-large"):
            overrides = settings[name]
            assert isinstance(overrides, Mapping)
            assert overrides["gradient_noise_scale_every"] == real.sizes[part_name].sharpness_every, (part_name, name)
            assert overrides["gradient_noise_batch"] == batch
        gd = settings["gd"]
        assert isinstance(gd, Mapping) and "gradient_noise_scale_every" not in gd
    # The gpu tier's profiles record none: their runs are as they were.
    for name in profiles.GPU_PROFILES:
        profile = profiles.PROFILES[name]
        for part_name, part in profile.parts.items():
            for declared in part_settings(part, profile.sizes[part_name]).values():
                assert not isinstance(declared, Mapping) or "gradient_noise_scale_every" not in declared


# ------------------------------------------------------------------ edge of stability (X1)
def test_edge_ratio_is_the_late_sharpness_over_two_over_lr_lowest_or_highest_over_rates() -> None:
    def edge_run(lr: float, sharpness: Sequence[float | None]) -> WalkResult:
        return run([record(step, sharpness=value) for step, value in enumerate(sharpness)], lr=lr)

    # 2/lr = 20 at lr 0.1 and 10 at lr 0.2; four estimates each, the last two are the late half.
    runs = {
        "a": [edge_run(0.1, [5.0, None, 10.0, 18.0, 22.0]), edge_run(0.1, [5.0, 16.0, 20.0, 24.0])],
        "b": [edge_run(0.2, [5.0, 8.0, 12.0, 14.0]), edge_run(0.2, [5.0, 7.0, 9.0, 11.0])],
    }
    # Per seed, late means over 2/lr: a 20/20 = 1.0 and 22/20 = 1.1; b 13/10 = 1.3 and 10/10 = 1.0.
    assert_estimate(cs.edge_sharpness_ratio(("a", "b"), lowest=True)(runs), [1.0, 1.0])
    assert_estimate(cs.edge_sharpness_ratio(("a", "b"), lowest=False)(runs), [1.3, 1.1])
    with pytest.raises(ValueError, match="no sharpness estimates"):
        cs.edge_sharpness_ratio(("a",), lowest=True)({"a": [run([record(0)])]})


def test_the_adaptive_edge_ratio_reads_the_preconditioned_sharpness_over_its_recorded_threshold() -> None:
    def adam_run(values: Sequence[float], threshold: float = 380.0) -> WalkResult:
        records = [
            record(step, preconditioned_sharpness=value, stability_threshold=threshold, sharpness=1e6)
            for step, value in enumerate(values)
        ]
        return run(records, lr=0.1)

    # Late halves 342, 380 and 361, 399 over 380: 0.95 and 1.0; GD's sharpness (1e6) is not read.
    runs = {"adam": [adam_run([900.0, 100.0, 342.0, 380.0]), adam_run([900.0, 200.0, 361.0, 399.0])]}
    assert_estimate(cs.edge_sharpness_ratio(("adam",), lowest=True, preconditioned=True)(runs), [0.95, 1.0])
    changed = run(
        [record(s, preconditioned_sharpness=1.0, stability_threshold=t) for s, t in enumerate((1.0, 2.0, 3.0))]
    )
    with pytest.raises(ValueError, match="threshold changed"):
        cs.edge_sharpness_ratio(("adam",), lowest=True, preconditioned=True)({"adam": [changed]})


def test_edge_cosine_is_the_least_negative_second_half_mean_over_rates() -> None:
    runs = {
        "a": [run(windows_of("cosine", (range(4), [1.0, 1.0, -0.9, -0.7])))],
        "b": [run(windows_of("cosine", (range(4), [1.0, 0.5, -0.5, -0.9])))],
    }
    assert_estimate(cs.edge_cosine(("a", "b"))(runs), [-0.7])


# ------------------------------------------------------------------------ tuned settings
def test_a_tuned_setting_runs_its_grid_and_takes_the_point_with_the_best_mean_score() -> None:
    # Final validation accuracy peaks at lr 0.2 on average over the seeds (seed 2 prefers 0.4).
    accuracy = {(0.1, 1): 0.80, (0.1, 2): 0.81, (0.2, 1): 0.86, (0.2, 2): 0.84, (0.4, 1): 0.70, (0.4, 2): 0.85}
    cache = HandMadeCache(
        lambda c: run(history=[{"step": 1, "val_accuracy": accuracy[(c.lr, c.seed)]}], lr=c.lr, seed=c.seed)
    )
    check = ClaimCheck(
        claim_id="C11",
        name="hand-made",
        statistic_name="accuracy gap",
        settings=("tuned", "fixed"),
        statistic=cs.final_gap("val_accuracy", "tuned", "fixed"),
        relation=">",
        bound=0.0,
        bound_reason="a test",
    )
    recorder = ListRecorder()
    table: dict[str, SettingOverrides] = {
        "tuned": TunedSetting(({"lr": 0.1}, {"lr": 0.2}, {"lr": 0.4})),
        "fixed": {"lr": 0.1},
    }
    estimate = run_check(check, WalkConfig(), table, (1, 2), cache, recorder)

    assert_estimate(estimate, [0.86 - 0.80, 0.84 - 0.81])
    assert len(cache.results) == 6  # three grid points x two seeds; the fixed setting is the grid's lr 0.1
    assert any(note.endswith("lr 0.4 -> 0.7750; chosen: lr 0.2") for note in recorder.notes)
    with pytest.raises(ValueError, match="at least one grid point"):
        TunedSetting(())


def test_every_check_notes_how_many_seeds_would_decide_it() -> None:
    cache = HandMadeCache(lambda c: run(history=[{"step": 1, "train_loss": c.seed / 10}], lr=c.lr, seed=c.seed))
    check = ClaimCheck(
        claim_id="C9",
        name="hand-made",
        statistic_name="loss",
        settings=("only",),
        statistic=lambda runs: mean_with_t_interval([last_history(r, "train_loss") for r in runs["only"]]),
        relation=">",
        bound=0.0,
        bound_reason="a test",
    )
    recorder = ListRecorder()
    run_check(check, WalkConfig(), {"only": {}}, (1, 2, 3), cache, recorder)
    assert any(note.startswith("seeds for 80% power") for note in recorder.notes)
    # 0.1, 0.2, 0.3: the interval reaches below 0, so no count promises the verdict again.
    assert any(
        note.startswith("seeds to replicate the verdict (fail)") and "not sized" in note for note in recorder.notes
    )
    recorder = ListRecorder()
    run_check(check, WalkConfig(), {"only": {}}, (11, 12, 13), cache, recorder)
    replication = seeds_for_replication([1.1, 1.2, 1.3], 0.0, ">")
    assert replication.seeds is not None
    assert any(
        note.startswith("seeds to replicate the verdict (pass) with 90% probability")
        and note.endswith(f": {replication.seeds} (ran 3)")
        for note in recorder.notes
    )


def test_checks_with_more_seeds_start_with_the_profile_seeds_and_share_their_runs() -> None:
    real = profiles.PROFILES["real"]
    data = {name: paper_data(part) for name, part in real.parts.items()}
    seeds = {case.id: case.seeds for case in cases(real, "cpu", data)}
    assert seeds["C10-mlp-sharpness"] == profiles.REPLICATION_SEEDS[:28]
    assert seeds["C9-mlp-sgd-best"] == profiles.REPLICATION_SEEDS
    assert seeds["C10-mlp-sharpness"][:3] == seeds["C2-mlp-sgd-floor"] == profiles.PAPER_SEEDS
    with pytest.raises(ValueError, match="must start with the profile's"):
        dataclasses.replace(real, more_seeds={("mlp", "C10-sharpness"): (1, 2, 3)})
    with pytest.raises(ValueError, match="which it does not run"):
        dataclasses.replace(real, more_seeds={("conv", "C10-sharpness"): profiles.POWER_SEEDS})
