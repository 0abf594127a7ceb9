"""One burst, one set of settings, one restoration: ``svrt deconvolve``, ``svrt batch``, the Python API of the
README and the streaming ``Restorer`` all use the default forward model of
:func:`svrt.runtime.forward_choice.default_forward_model` and give bit-identical objects (issue 20 item 4);
every restoration says which forward model drove it and why; method momfbd calls the solver's callback for
every iteration (issue 21). A 48^2 burst of 3 frames and a short momfbd solve keep it to seconds."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from svrt.cli import cli
from svrt.fileio import read_burst, read_restoration, write_burst
from svrt.runtime.forward_choice import EXACT_OPTICS, default_forward_model
from svrt.runtime.solver import SVMOMFBD, SolverConfig, load_solver_engine

# short but complete momfbd: patch wavefronts, a first object solve and one SV refinement round; data_per_mode 0:
# the 48^2 x 3-frame field supports 2 modes by the defaults' rule, which refuses it (this tests the entry points)
SETTINGS = dict(grid=24, patch_size=32, patch_iterations=4, object_iterations=4, refine_rounds=1,
                refine_iterations=2, refine_above=0.0, margin=8, data_per_mode=0.0)


@pytest.fixture(scope="module")
def burst_file(tmp_path_factory):
    from svrt.simulate import simulate_burst

    folder = tmp_path_factory.mktemp("entry")
    burst = simulate_burst("crisp8542", 48, 3, 1, 7, r0_cm=10.0, progress=False)
    path = folder / "burst.fits"
    write_burst(path, burst)
    (folder / "run.toml").write_text("[solver]\n" + "".join(f"{k} = {v}\n" for k, v in SETTINGS.items()))
    return path


@pytest.fixture(scope="module")
def api_solve(burst_file):
    """The README's Python API: the default engine, the same settings; every callback row kept."""
    import time

    rows: list = []
    solver = SVMOMFBD(load_solver_engine(), SolverConfig(progress=False, **SETTINGS))
    result = solver.solve(read_burst(burst_file), callback=lambda row: rows.append({**row, "at": time.perf_counter()}))
    return result, rows


def _run(args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def test_every_entry_point_gives_the_same_restoration(burst_file, api_solve, tmp_path):
    from svrt.runtime.streaming import Restorer

    config = burst_file.parent / "run.toml"
    _run(["deconvolve", burst_file, "-o", tmp_path / "cli.fits", "--config", config, "--no-png", "-q"])
    _run(["batch", burst_file, "-o", tmp_path / "batch", "--workers", "0", "--config", config, "-q"])
    with Restorer(None, SolverConfig(**SETTINGS)) as restorer:
        item = restorer.restore(str(burst_file))
        assert item.error is None, item.error
        item.write(tmp_path / "stream.fits")
    api = api_solve[0].objects
    for name in ("cli.fits", "batch/burst.fits", "stream.fits"):
        rest = read_restoration(tmp_path / name)
        assert np.array_equal(rest.objects, api), name
        assert rest.header["FWDMODEL"] == "exact optics", name
        assert rest.header["FWDWHY"] == default_forward_model("momfbd", "cpu")[1], name
        assert rest.header["ENGINE_BACKEND"] == EXACT_OPTICS, name


def test_the_default_forward_model_is_one_rule_with_its_reason():
    for method in ("momfbd", "adam", None):
        for device in ("cpu", "cuda"):
            backend, why = default_forward_model(method, device)
            assert backend == EXACT_OPTICS and 0 < len(why) <= 68
    engine = load_solver_engine()
    assert engine.identity.backend == EXACT_OPTICS and engine.chosen_because == default_forward_model()[1]
    named = load_solver_engine(None, backend=EXACT_OPTICS)
    assert named.chosen_because is None   # the caller chose it: FWDWHY says so


def test_momfbd_calls_back_for_every_iteration(api_solve):
    result, rows = api_solve
    loss = result.loss
    assert len(loss["iteration"]) > 5
    assert [r["iteration"] for r in rows] == list(loss["iteration"])
    assert np.array_equal([r["total"] for r in rows], loss["total"])
    assert {r["tile"] for r in rows} == {""}
    # live, as each iteration ends (not a stage's rows at once): a progress display or log sees real intervals
    assert np.median(np.diff([r["at"] for r in rows])) > 1e-4
    assert np.all(loss["time_s"] > 0)


def test_a_tiled_momfbd_solve_says_it_runs_adam(burst_file):
    """momfbd eliminates the object over the whole field: a field cut into tiles is solved by adam, with a
    warning and METHOD_USED = adam (it used to switch without a word)."""
    from svrt.checks import SvrtWarning

    config = SolverConfig(method="momfbd", tile_size=32, tile_overlap=8, iterations=1, grid=0, progress=False)
    with pytest.warns(SvrtWarning, match="solved with method adam"):
        result = SVMOMFBD(load_solver_engine(), config).solve(read_burst(burst_file))
    assert result.header["METHOD_USED"] == "adam" and result.header["NTILES"] > 1
