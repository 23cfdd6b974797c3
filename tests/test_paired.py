"""Paired moments against numpy on the whole matrix of per-sample losses, however chunked."""

from __future__ import annotations

import math
from itertools import pairwise

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from sgdwalk.instrument.paired import PairedLossMoments, contrast_standard_error, difference_standard_error
from tests.helpers import FLOAT64_REORDERED, assert_close


@st.composite
def chunked_losses(draw: st.DrawFn) -> tuple[np.ndarray, list[int]]:
    points = draw(st.integers(1, 6))
    samples = draw(st.integers(2, 60))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    # Large means with a small spread: the case where a raw sum of squares would cancel.
    offset = draw(st.sampled_from([0.0, 1.0, 1e4]))
    losses = offset + rng.standard_normal((points, samples)) * rng.uniform(0.01, 2.0, size=(points, 1))
    cuts = sorted(draw(st.lists(st.integers(1, samples - 1), max_size=5, unique=True)))
    return losses, [0, *cuts, samples]


def accumulate(losses: np.ndarray, bounds: list[int]) -> PairedLossMoments:
    moments = PairedLossMoments(losses.shape[0])
    for first, stop in pairwise(bounds):
        moments.update(torch.from_numpy(losses[:, first:stop]))
    return moments


@given(case=chunked_losses())
def test_means_and_covariance_equal_numpy_for_any_chunking(case: tuple[np.ndarray, list[int]]) -> None:
    losses, bounds = case
    moments = accumulate(losses, bounds)
    assert moments.count == losses.shape[1]
    assert_close(moments.means, losses.mean(axis=1), FLOAT64_REORDERED, "means")
    scale = max(1.0, float(np.abs(losses).max()))
    # The covariance of values of size `scale` carries rounding of order eps·scale².
    expected = np.cov(losses, ddof=1).reshape(losses.shape[0], losses.shape[0])
    np.testing.assert_allclose(moments.covariance, expected, rtol=1e-9, atol=1e-12 * scale**2)


@given(case=chunked_losses(), weights_seed=st.integers(0, 1000))
def test_contrast_standard_error_is_the_sd_of_per_sample_contrasts(
    case: tuple[np.ndarray, list[int]], weights_seed: int
) -> None:
    losses, bounds = case
    moments = accumulate(losses, bounds)
    weights = np.random.default_rng(weights_seed).standard_normal(losses.shape[0])
    per_sample = weights @ losses
    expected = per_sample.std(ddof=1) / math.sqrt(per_sample.size)
    scale = max(1.0, float(np.abs(losses).max())) * float(np.abs(weights).sum())
    assert contrast_standard_error(moments.covariance, moments.count, weights) == pytest.approx(
        expected, rel=1e-7, abs=1e-12 * scale
    )


def test_a_point_against_itself_has_no_error_and_two_samples_are_needed() -> None:
    moments = accumulate(np.array([[1.0, 2.0, 4.0], [0.5, 0.5, 1.0]]), [0, 3])
    assert difference_standard_error(moments.covariance, moments.count, 1, 1) == 0.0
    lone = accumulate(np.array([[1.0], [2.0]]), [0, 1])
    assert math.isnan(difference_standard_error(lone.covariance, lone.count, 0, 1))


def test_paired_differences_are_far_more_precise_than_either_loss() -> None:
    # Two points whose per-sample losses move together: the difference's error is small.
    rng = np.random.default_rng(0)
    common = rng.standard_normal(1000)
    losses = np.stack([common, common + 0.01 + 0.001 * rng.standard_normal(1000)])
    moments = accumulate(losses, [0, 400, 1000])
    unpaired = math.sqrt((losses[0].var(ddof=1) + losses[1].var(ddof=1)) / 1000)
    assert difference_standard_error(moments.covariance, moments.count, 1, 0) < unpaired / 100


def test_wrong_shapes_are_refused() -> None:
    moments = PairedLossMoments(3)
    with pytest.raises(ValueError, match="shape"):
        moments.update(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="no samples"):
        _ = moments.means
    with pytest.raises(ValueError, match="positive"):
        PairedLossMoments(0)
