"""The coarse-grid contract (svrt.mode_grid): node positions, grid shape, per-pixel modes."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from svrt.errors import SvrtError
from svrt.mode_grid import bilinear_weights, grid_shape, node_positions, per_pixel_modes, sample_coarse
from svrt.phase_screens import node_field_angles


@pytest.mark.parametrize("n, ng", [(37, 5), (64, 4), (30, 1), (9, 9)])
def test_upsampling_reproduces_the_nodes_at_their_positions(n, ng):
    c = torch.randn(2, 3, ng, ng, dtype=torch.float64)
    pos = torch.as_tensor(node_positions(n, ng))
    got = sample_coarse(c, pos, pos, (n, n))
    assert torch.allclose(got, c, atol=1e-6)


def test_per_pixel_modes_is_interpolate_and_keeps_autograd():
    c = torch.randn(2, 4, 3, 5, requires_grad=True)
    fine = per_pixel_modes(c, (17, 23))
    assert torch.equal(fine, F.interpolate(c, size=(17, 23), mode="bilinear", align_corners=False))
    fine.sum().backward()
    assert c.grad is not None
    # numpy in, float32 tensor out; a 3-D grid [M, Yg, Xg] stays 3-D
    out = per_pixel_modes(np.ones((4, 3, 5)), (6, 10))
    assert out.dtype == torch.float32 and out.shape == (4, 6, 10)


def test_weights_matrix_is_the_upsampling():
    c = torch.randn(5, 4, dtype=torch.float64)
    wy, wx = bilinear_weights(31, 5, dtype=torch.float64), bilinear_weights(22, 4, dtype=torch.float64)
    assert torch.allclose(wy @ c @ wx.T, per_pixel_modes(c[None, None], (31, 22))[0, 0], atol=1e-12)


def test_node_field_angles_are_the_node_positions_from_the_centre():
    ay, ax = node_field_angles((4, 2), (64, 32), 0.1)
    np.testing.assert_allclose(ay, [-2.4, -0.8, 0.8, 2.4])
    np.testing.assert_allclose(ax, [-0.8, 0.8])


def test_grid_larger_than_the_image_is_refused():
    with pytest.raises(SvrtError, match="larger than the image"):
        grid_shape((16, 16), 17)
