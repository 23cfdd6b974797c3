"""A layer's Hessian block: Lanczos on the projected products against eigvalsh of the dense
block of a small network's float64 Hessian."""

from __future__ import annotations

import numpy as np
import pytest

from sgdwalk.instrument.block_curvature import parameter_block_indices, top_block_hessian_eigenvalues
from tests.helpers import LANCZOS_VS_DENSE, assert_close
from tests.test_curvature import network_setting

# The network is Linear(4, 6) · tanh · Linear(6, 3): flat coordinates 0-23 the first weight,
# 24-29 its bias, 30-47 the second weight, 48-50 its bias.
BLOCKS = {
    ("0",): np.arange(0, 30),
    ("2.weight",): np.arange(30, 48),
    ("0.bias", "2.bias"): np.concatenate([np.arange(24, 30), np.arange(48, 51)]),
}


@pytest.mark.parametrize("names", list(BLOCKS), ids=["+".join(names) for names in BLOCKS])
@pytest.mark.parametrize("k", [1, 3])
def test_top_block_eigenvalues_match_the_dense_block(names: tuple[str, ...], k: int) -> None:
    model, point, measurement, hessian = network_setting()
    indices = BLOCKS[names]
    assert np.array_equal(parameter_block_indices(model, names), indices)
    dense = np.linalg.eigvalsh(hessian[np.ix_(indices, indices)])[::-1][:k]
    found = top_block_hessian_eigenvalues(model, point, measurement, names, k, seed=2)
    assert_close(found.values, dense, LANCZOS_VS_DENSE, f"top {k} of the block {names}")
    # Cauchy interlacing: a principal block's top eigenvalue is at most the whole Hessian's.
    assert found.values[0] <= np.linalg.eigvalsh(hessian)[-1] + 1e-12


def test_block_refuses_unknown_names() -> None:
    model, _, _, _ = network_setting()
    with pytest.raises(ValueError, match=r"no trainable parameter is named by \['3'\]"):
        parameter_block_indices(model, ["0", "3"])
    with pytest.raises(ValueError, match="at least one parameter"):
        parameter_block_indices(model, [])
    # "0.w" is not a module: a prefix selects only at a dot.
    with pytest.raises(ValueError, match="no trainable parameter is named"):
        parameter_block_indices(model, ["0.w"])
