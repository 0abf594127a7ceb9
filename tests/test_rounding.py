"""Issue 22, item 5: a restoration does not depend on rounding. A relative perturbation of 1e-6 of the frames
(far below the photon noise; the size of what another thread count or CPU does to the arithmetic) moves the
default restoration's NMSE_var by under 1 %.

The burst: 96^2 x 8 frames, r0 = 7 cm (strong seeing), no AO, seed 2. With the earlier L-BFGS wavefront fits
(``wavefront_optimizer="lbfgs"``: line searches whose decisions follow rounding) three runs gave NMSE_var
0.0845, 0.0768 and 0.0836 (spread 9.2 %); with the default Nesterov descent 0.07919, 0.07918, 0.07919
(0.01 %). The bound is the issue's, 1 %, a hundred times the measured change; the wavefronts must move less
than 0.3 % of their RMS. Not every strong-seeing burst is this quiet: seed 1 of the same kind still moves by
3 % (docs/QUALITY.md, "Rounding", lists the exceptions measured)."""

import numpy as np
import pytest

from svrt.benchmarks.peers import score_objects
from svrt.benchmarks.stability import perturbed
from svrt.runtime.solver import SVMOMFBD, SolverConfig, load_solver_engine
from svrt.simulate import simulate_burst


@pytest.mark.slow
def test_a_perturbation_in_the_sixth_digit_moves_the_restoration_by_under_one_percent():
    burst = simulate_burst(size=96, n_frames=8, n_objects=1, seed=2, r0_cm=7.0, progress=False)
    engine = load_solver_engine()
    runs = []
    for b in (burst, perturbed(burst, 1)):
        r = SVMOMFBD(engine, SolverConfig(progress=False)).solve(b)
        nmse = score_objects(np.asarray(r.objects), b.truth, b.instruments, destretch=False)[0]["nmse_variance"]
        runs.append((nmse, np.asarray(r.modes, np.float64)))
    (n0, a0), (n1, a1) = runs
    assert abs(n1 - n0) / n0 < 0.01, (n0, n1)
    moved = np.sqrt(np.mean((a1 - a0) ** 2) / np.mean(a0 ** 2))
    assert moved < 3e-3, moved
    # and it is a restoration, not a quiet failure: far closer to the truth than the frame average
    average = score_objects(np.asarray(burst.frames).mean(axis=1), burst.truth, burst.instruments,
                            destretch=False)[0]["nmse_variance"]
    assert n0 < 0.5 * average, (n0, average)
