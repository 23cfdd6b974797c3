"""Every numerical tolerance of the instrument, each with the reason for its value.

Kept in one place so that a reader sees at a glance what is treated as "equal", and so a
GPU or reduced-precision run can loosen them deliberately rather than by accident.
"""

from __future__ import annotations

# A segment's interior loss must exceed the higher endpoint by more than this fraction of
# that endpoint's magnitude to count as a barrier. float32 means of a few thousand per-sample
# losses carry ~1e-7 relative rounding, and interpolated parameters θ_t + α(θ_{t+1} − θ_t)
# are off by a few ulps; 1e-5 sits two orders above that noise and far below the paper's
# barriers (Table 1 counts excesses visible on a plot).
BARRIER_RELATIVE_TOLERANCE: float = 1e-5

# Absolute part of the barrier test, for losses near zero where a relative test is empty.
# float32 resolution near a loss of 1e-3 is ~1e-10; 1e-9 clears it.
BARRIER_ABSOLUTE_TOLERANCE: float = 1e-9

# A floor counts as interior only when the grid minimum is below both endpoints by more than
# this fraction of the lower one: a float64 summary of float32 losses that tie at an endpoint
# differs by ~1e-8 relative at most, so 1e-7 separates a tie from a real dip. It is smaller
# than the barrier tolerance because a floor dip needs no protection against interpolation
# error in θ (the grid point and the endpoint are both evaluated, not compared across steps).
FLOOR_RELATIVE_TOLERANCE: float = 1e-7

# A segment's mean losses measured in bfloat16 (``measurement_precision``) lie within this
# fraction of float32's: bf16 keeps 8 bits of mantissa (a relative resolution of 2^-8) and
# each matmul's inputs are rounded to it, but the rounding errors of many products and
# samples largely cancel in a mean loss, which moves by well under one bf16 step (at most
# 2.6e-4 measured on small MLPs and conv nets). No decision of the instrument uses it: it is
# what bfloat16 measurement promises, and the tests hold it to that.
BFLOAT16_LOSS_RELATIVE_TOLERANCE: float = 2**-8

# Below this product of norms the angle between two gradients is undefined (a zero
# gradient); the cosine is then reported as 0.0, as torch's cosine_similarity does.
COSINE_NORM_PRODUCT_FLOOR: float = 1e-30

# Confidence of the per-step barrier test (crossed / not crossed / undecided), held over
# every interior point and every look of a precision-targeted measurement: each decision is
# wrong at most 5 % of the time, and only at its least favourable truth (an interior point
# exactly level with the higher end); in the paper's valleys, whose floors lie well below
# both ends, far less often. 0.99 was tried first: on the default walk every step then
# needed about 1.4 times the samples ((3.09 / 2.58)² at four looks) to be decided.
BARRIER_TEST_CONFIDENCE: float = 0.95

# Precision-targeted records count a grid point as a possible floor when its loss lies within
# this one-sided confidence of the measured floor (z = 1.96): the true floor is left out with
# probability at most 2.5 %, and the heights' standard errors then cover every candidate
# (uncertainty.selected_floor_standard_errors). Measured over 45 disjoint 1,000-image sets at
# 20 steps of a Fashion-MNIST run, 1.0 (z) left heights of 0 with error 0 where the
# population's was not, and coverage of height_end at 0.76 on one step.
FLOOR_CANDIDATE_CONFIDENCE: float = 0.975

# The sharpness solver (sharpness.lanczos_top_eigenpair) stops, checking after every
# Hessian-vector product, when the residual r of its top Ritz pair is below this fraction of
# the value: an eigenvalue then lies within r of the value, and for a top eigenvalue not yet
# told apart from a close second the error is r²/gap ≤ r. This is ARPACK's criterion, which
# the solver replaced, at 1e-6 instead of 1e-8: 1e-8 bought a value good to ~1e-16 in twice
# the products. 1e-6 is the agreement the quick suite asks of a float64 estimate, ten times
# under the 1e-5 that benchmarks/test_sharpness_speed.py asks against a power iteration, and
# above float32 Hessian-vector rounding (~1e-7 relative).
SHARPNESS_RELATIVE_ERROR: float = 1e-6

# Batches the measurement set is split into for the standard error of the top eigenvalue
# (sharpness.top_eigenvalue_standard_error): 20 batch means give a standard deviation good
# to about ±16 % (1/sqrt(2·(20 − 1))), enough to say how many samples a stable estimate
# needs, at the cost of a single extra pass of Hessian-vector products.
SHARPNESS_ERROR_BATCHES: int = 20

# Disjoint parts of the measurement set for the gradient noise scale's standard error
# (gradient_noise.gradient_noise_scale, a delete-a-part jackknife): as for the sharpness, 20
# parts give a standard error good to about ±16 % (1/sqrt(2·(20 − 1))), and each part costs
# one float64 parameter vector of memory, not a pass of its own.
GRADIENT_NOISE_ERROR_PARTS: int = 20
