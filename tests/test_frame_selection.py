"""Frame selection by RMS contrast: the metric, the choice, and the solver's record of it."""

import numpy as np
import pytest
import torch

from svrt.errors import SvrtError
from svrt.runtime.frame_selection import frame_contrast, frames_to_keep


def _blurred(image: np.ndarray, sigma: float) -> np.ndarray:
    y, x = image.shape
    fy, fx = np.meshgrid(np.fft.fftfreq(y), np.fft.fftfreq(x), indexing="ij")
    return np.fft.ifft2(np.fft.fft2(image) * np.exp(-2 * (np.pi * sigma) ** 2 * (fx ** 2 + fy ** 2))).real


def test_contrast_ranks_frames_by_their_blur():
    from svrt.scenes import make_objects

    scene = make_objects("granulation", 1, (96, 96), 0.059, 1)[0]
    sigmas = [3.0, 0.5, 2.0, 1.0]
    frames = torch.as_tensor(np.stack([_blurred(scene, s) for s in sigmas]), dtype=torch.float32)
    c = frame_contrast(frames)
    assert list(np.argsort(-c.numpy())) == [1, 3, 2, 0]          # sharper frame, higher contrast
    assert frames_to_keep(c, 0.5) == [1, 3]
    assert frames_to_keep(c, 3) == [1, 2, 3]
    assert frames_to_keep(c, 0.1) == [1]                         # at least one frame
    # masked pixels do not count
    valid = torch.ones_like(frames, dtype=torch.bool)
    frames2 = frames.clone()
    frames2[0, 40:50, 40:50] = 1e3
    valid[0, 40:50, 40:50] = False
    assert torch.allclose(frame_contrast(frames2, valid)[0], frame_contrast(frames, valid)[0])


def test_bad_requests_are_one_sentence():
    c = torch.tensor([0.1, 0.2, 0.3])
    for select, words in ((0, "fraction"), (2.5, "whole"), (5, "has 3")):
        with pytest.raises(SvrtError, match=words):
            frames_to_keep(c, select)
    from svrt.runtime.solver import SolverConfig

    with pytest.raises(SvrtError, match="select_frames"):
        SolverConfig(select_frames=-1)


def test_solver_keeps_the_sharp_frames_and_records_them():
    from svrt.runtime.solver import SVMOMFBD, SolverConfig, load_solver_engine
    from svrt.simulate import simulate_burst

    torch.set_num_threads(1)
    b = simulate_burst("crisp8542", size=48, n_frames=3, n_objects=1, seed=2, r0_cm=12.0, theta0_arcsec=None,
                       noise=0.01, progress=False, psf_size=40)
    # frame 1 ruined by extra blur: it must be the one left out
    b.frames[0, 1] = _blurred(b.frames[0, 1], 4.0)
    engine = load_solver_engine(None, backend="psf-interpolation")
    # data_per_mode=0: 48^2 x 2 kept frames support only one mode by the defaults' rule; this tests the selection
    cfg = SolverConfig(grid=0, fit_modes=5, patch_iterations=5, object_iterations=3, select_frames=2, progress=False,
                       data_per_mode=0)
    res = SVMOMFBD(engine, cfg).solve(b)
    assert res.modes.shape[0] == 2 and res.model.shape[1] == 2
    assert res.header["FRSEL_KEPT"] == "0,2" and res.header["FRSEL_N"] == 3
    contrasts = [float(v) for v in res.header["FRSEL_CONTRAST"].split(",")]
    assert contrasts[1] < min(contrasts[0], contrasts[2])
    assert res.header["SELECT_FRAMES"] == 2
