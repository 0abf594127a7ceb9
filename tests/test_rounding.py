"""Issue 22, item 5: a restoration does not depend on rounding. A relative perturbation of 1e-6 of the frames
(far below the photon noise; the size of what another thread count or CPU does to the arithmetic) moves the
default restoration's NMSE_var by under 1 %.

The burst: 96^2 x 8 frames, r0 = 7 cm (strong seeing), no AO, seed 1, the most sensitive burst measured
(docs/QUALITY.md, "Rounding"). With the earlier L-BFGS wavefront fits (line searches whose decisions follow
rounding) the 96^2 r0 = 7 cm bursts spread by up to 9 %; with Nesterov descent and no mode prior this one still
moved 3.1 % (0.0678 against 0.0699); with the Kolmogorov prior on the modes already fitted (``mode_prior = 1``,
the default) three runs gave 0.07038, 0.07028, 0.07024 (0.2 %) and the wavefronts moved 0.3-0.5 % of their RMS.
The NMSE bound is the issue's, 1 %, five times the measured spread; the wavefronts' 1.5 % is three times their
largest measured move."""

import numpy as np
import pytest

from svrt.benchmarks.peers import score_objects
from svrt.benchmarks.stability import perturbed
from svrt.runtime.solver import SVMOMFBD, SolverConfig, load_solver_engine
from svrt.simulate import simulate_burst


@pytest.mark.slow
def test_a_perturbation_in_the_sixth_digit_moves_the_restoration_by_under_one_percent():
    burst = simulate_burst(size=96, n_frames=8, n_objects=1, seed=1, r0_cm=7.0, progress=False)
    engine = load_solver_engine()
    runs = []
    for b in (burst, perturbed(burst, 1)):
        r = SVMOMFBD(engine, SolverConfig(progress=False)).solve(b)
        nmse = score_objects(np.asarray(r.objects), b.truth, b.instruments, destretch=False)[0]["nmse_variance"]
        runs.append((nmse, np.asarray(r.modes, np.float64)))
    (n0, a0), (n1, a1) = runs
    assert abs(n1 - n0) / n0 < 0.01, (n0, n1)
    moved = np.sqrt(np.mean((a1 - a0) ** 2) / np.mean(a0 ** 2))
    assert moved < 1.5e-2, moved
    # and it is a restoration, not a quiet failure: far closer to the truth than the frame average
    average = score_objects(np.asarray(burst.frames).mean(axis=1), burst.truth, burst.instruments,
                            destretch=False)[0]["nmse_variance"]
    assert n0 < 0.5 * average, (n0, average)
