"""The record's fields against the parts they come from: ``SegmentSummary`` and
``SegmentUncertainty`` declare their fields, and ``StepRecord`` holds each part's fields as one
run, in the part's order and with the part's types (None admitted where an error can be
undefined). A field added to a part and not to the record, or to the record's run of a part
and not to the part, fails here."""

from __future__ import annotations

import json
import math
import types
from dataclasses import fields
from typing import Any, Literal, get_args, get_origin, get_type_hints

import numpy as np
import pytest

from sgdwalk.instrument.record import (
    OPTIONAL_FIELDS,
    RECORD_FIELDS,
    SCHEDULED_FIELDS,
    TUPLE_FIELDS,
    StepRecord,
    record_from_dict,
)
from sgdwalk.instrument.segment import SegmentSummary, summarize_segment
from sgdwalk.instrument.uncertainty import SegmentUncertainty, segment_uncertainty
from sgdwalk.integrations.metrics import NOT_LOGGED, PER_INDEX_FIELDS, flat_metrics

RECORD_HINTS = get_type_hints(StepRecord)
# A segment with an interior floor: 1.0 at α = 0, down to 0.7, back up to 0.9 at α = 1.
ALPHAS = (0.0, 0.25, 0.5, 0.75)
PROFILE = (1.0, 0.8, 0.7, 0.75, 0.9)


def widened(hint: Any) -> Any:
    """A literal of words as the record holds it: a str."""
    return str if get_origin(hint) is Literal and all(isinstance(arg, str) for arg in get_args(hint)) else hint


def union_members(hint: Any) -> set[Any]:
    return set(get_args(hint)) if isinstance(hint, types.UnionType) else {hint}


@pytest.mark.parametrize("part", [SegmentSummary, SegmentUncertainty], ids=lambda part: part.__name__)
def test_the_record_holds_each_part_as_one_run_in_the_parts_order(part: type) -> None:
    names = tuple(field.name for field in fields(part))
    first = RECORD_FIELDS.index(names[0])
    assert RECORD_FIELDS[first : first + len(names)] == names


def test_the_summary_fields_have_the_summarys_types() -> None:
    for name, hint in get_type_hints(SegmentSummary).items():
        assert RECORD_HINTS[name] == hint, name


def test_the_uncertainty_fields_have_the_uncertaintys_types_or_none() -> None:
    for name, hint in get_type_hints(SegmentUncertainty).items():
        assert union_members(RECORD_HINTS[name]) == union_members(widened(hint)) | {type(None)}, name


def test_tuple_and_optional_fields_are_read_from_the_annotations() -> None:
    assert TUPLE_FIELDS == (
        "segment_alphas",
        "segment_losses",
        "segment_loss_se",
        "segment_floor_se",
        "group_lrs",
        "top_eigenvalues",
    )
    assert set(OPTIONAL_FIELDS) == {name for name, hint in RECORD_HINTS.items() if type(None) in union_members(hint)}
    assert "loss_start" not in OPTIONAL_FIELDS and "lr" in OPTIONAL_FIELDS


def test_every_tuple_field_is_flattened_or_left_out_by_flat_metrics() -> None:
    # flat_metrics would otherwise call float() on a tuple.
    assert set(TUPLE_FIELDS) == set(PER_INDEX_FIELDS) | (set(NOT_LOGGED) & set(TUPLE_FIELDS))


def uncertainty(count: int) -> SegmentUncertainty:
    profile = np.array(PROFILE)
    # Per-sample losses that vary together with a little noise apart: a positive definite covariance.
    covariance = 0.01 * np.ones((profile.size, profile.size)) + 0.001 * np.eye(profile.size)
    return segment_uncertainty(profile, covariance, count)


def test_record_fields_keep_defined_errors() -> None:
    measured = uncertainty(count=100)
    assert measured.record_fields() == measured.as_dict()
    assert all(value is not None for value in measured.record_fields().values())


def test_record_fields_make_undefined_errors_none() -> None:
    measured = uncertainty(count=1)  # one sample: no standard error is defined
    assert math.isnan(measured.height_start_se)
    expected = {
        **measured.as_dict(),
        **{name: None for name in ("segment_loss_se", "segment_floor_se")},
        **{name: None for name in ("height_start_se", "height_end_se", "floor_depth_se", "barrier_excess_se")},
    }
    assert measured.record_fields() == expected
    assert measured.record_fields()["floor_depth"] == pytest.approx(0.9 - 0.7)


def full_record() -> StepRecord:
    """A record with every field set, built from the instrument's own parts."""
    summary = summarize_segment(np.array(ALPHAS), np.array(PROFILE[:-1]), PROFILE[-1])
    return StepRecord(
        step=3,
        lr=None,
        group_lrs=(0.1, 0.01),
        minibatch_loss=0.95,
        **summary.as_dict(),
        cosine=-0.25,
        update_cosine=0.5,
        grad_norm=1.0 / 3.0,
        step_length=0.01,
        distance_from_init=0.2,
        param_norm=7.0,
        sharpness=12.5,
        sharpness_se=0.5,
        sharpness_products=4,
        segment_alphas=(*ALPHAS, 1.0),
        segment_losses=PROFILE,
        **uncertainty(count=100).record_fields(),
        hessian_trace=40.0,
        hessian_trace_se=2.0,
        gradient_noise_scale=150.0,
        gradient_noise_scale_se=12.0,
        top_eigenvalues=(12.5, 3.0, 1.0),
        preconditioned_sharpness=300.0,
        stability_threshold=380.0,
    )


def test_a_scheduled_field_that_is_none_is_left_out_of_the_written_record() -> None:
    # A run that schedules none of them writes the keys records had before these fields existed.
    record = full_record()
    unscheduled = StepRecord(**{**record.as_dict(), **dict.fromkeys(SCHEDULED_FIELDS)})
    assert set(unscheduled.as_dict()) == set(RECORD_FIELDS) - SCHEDULED_FIELDS
    assert record_from_dict(unscheduled.as_dict()) == unscheduled
    assert set(record.as_dict()) == set(RECORD_FIELDS)
    assert {
        "hessian_trace",
        "hessian_trace_se",
        "gradient_noise_scale",
        "gradient_noise_scale_se",
        "top_eigenvalues",
        "preconditioned_sharpness",
        "stability_threshold",
    } == SCHEDULED_FIELDS
    # A field that is None on most steps but always written (the sharpness) stays in.
    assert (
        unscheduled.as_dict()["cosine"] == -0.25
        and "sharpness" in StepRecord(**{**unscheduled.as_dict(), "sharpness": None}).as_dict()
    )


def test_flat_metrics_gives_each_top_eigenvalue_its_index() -> None:
    metrics = flat_metrics(full_record())
    assert [metrics[f"top_eigenvalues/{i}"] for i in range(3)] == [12.5, 3.0, 1.0]
    assert "top_eigenvalues/3" not in metrics and "top_eigenvalues" not in metrics
    assert metrics["hessian_trace"] == 40.0 and metrics["stability_threshold"] == 380.0


def test_record_from_dict_inverts_a_json_round_trip() -> None:
    record = full_record()
    saved = json.loads(json.dumps(record.as_dict()))
    assert all(isinstance(saved[name], list) for name in TUPLE_FIELDS)
    assert record_from_dict(saved) == record


def test_record_from_dict_reads_pandas_fills_and_numpy_scalars() -> None:
    record = full_record()
    saved = {
        **record.as_dict(),
        "segment_losses": np.array(PROFILE),
        "group_lrs": math.nan,  # pandas' fill for a column a run did not write
        "cosine": math.nan,
        "step": np.int64(3),
    }
    restored = record_from_dict(saved)
    assert restored == StepRecord(**{**record.as_dict(), "group_lrs": None, "cosine": None})
    assert type(restored.step) is int and type(restored.segment_losses) is tuple


def test_record_from_dict_gives_a_field_missing_from_an_older_record_its_default() -> None:
    record = full_record()
    older = {name: value for name, value in record.as_dict().items() if name != "update_cosine"}
    assert record_from_dict(older) == StepRecord(**{**record.as_dict(), "update_cosine": None})
