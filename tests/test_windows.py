"""Edge windows and tilings (svrt.windows)."""

import numpy as np
import pytest
import torch

from svrt.windows import blend_weights, edge_ramp, flat_top, flat_top_window, hann, modified_hann, tiles


@pytest.mark.parametrize("r", [1, 3, 16])
def test_a_ramp_and_its_mirror_add_up_to_one(r):
    # sin^2 + cos^2: two tiles overlapping by one ramp hand the weight over without a bump
    e = edge_ramp(r)
    assert torch.allclose(e + e.flip(0), torch.ones(r, dtype=torch.float64), atol=1e-15)
    assert bool((e[1:] > e[:-1]).all()) and 0 < float(e[0]) < 0.5 + 1e-12 and 0.5 - 1e-12 < float(e[-1]) < 1


def test_flat_top_is_one_inside_and_clamps_its_ramp():
    w = flat_top(20, 4)
    assert torch.equal(w[4:16], torch.ones(12, dtype=torch.float64))
    assert torch.allclose(w[:4], edge_ramp(4)) and torch.allclose(w[16:], edge_ramp(4).flip(0))
    assert torch.allclose(flat_top(6, 10), flat_top(6, 3))       # a ramp never exceeds half the side
    w2 = flat_top_window((20, 8), 4)
    assert w2.dtype == torch.float32 and torch.allclose(w2, (w[:, None] * flat_top(8, 4)[None]).float())


def test_modified_hann_ramps_over_an_eighth_of_the_side():
    w = modified_hann(64)
    assert torch.equal(w[8:56, 8:56], torch.ones(48, 48)) and float(w[7, 32]) < 1


def test_hann_is_numpys():
    np.testing.assert_allclose(hann((7, 12)).numpy(), np.outer(np.hanning(7), np.hanning(12)), atol=1e-15)


@pytest.mark.parametrize("shape, tile, overlap", [((100, 40), 64, 16), ((257, 300), 96, 24), ((50, 50), 64, 8)])
def test_solver_tiles_cover_the_field_and_blend_to_positive_weights(shape, tile, overlap):
    acc = np.zeros(shape)
    for y0, x0, ty, tx in tiles(shape, tile, overlap):
        assert 0 <= y0 and y0 + ty <= shape[0] and 0 <= x0 and x0 + tx <= shape[1]
        wy, wx = blend_weights(shape[0], y0, ty, overlap), blend_weights(shape[1], x0, tx, overlap)
        acc[y0:y0 + ty, x0:x0 + tx] += wy[:, None] * wx[None, :]
    assert acc.min() > 0.1
    assert acc[0, 0] == 1.0    # flat at the field's borders
