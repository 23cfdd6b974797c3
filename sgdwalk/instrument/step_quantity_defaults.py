"""Defaults of the optional per-step quantities (``step_quantities``), in a module without
torch, so that the run's configuration reads them without importing it."""

from __future__ import annotations

from typing import Final

# Hutch++ products per trace: a third sketch the top subspace, a third take its trace
# exactly, a third (10) probe the deflated rest, whose standard error is then known to
# about 1/√(2·9) ≈ 24 % of itself; about the products of one cold sharpness estimate.
HESSIAN_TRACE_PROBES: Final = 30
# Hutch++ needs one product to sketch, one to take the sketch's trace and two for the rest's error.
MINIMUM_HESSIAN_TRACE_PROBES: Final = 4
# Eigenvalues per top-k estimate: enough to see whether the top one stands alone or is one
# of a cluster (a classifier's Hessian has about as many outliers as classes less one).
TOP_EIGENVALUES_K: Final = 5
