"""One source for settings: the options of svrt deconvolve / batch / train are generated from
SolverConfig / TrainConfig, a TOML file (--config) sits between the defaults and the command line,
and ``svrt config`` prints a file that reads back to the defaults. No solve runs here: the commands
are stopped right after they have built their settings."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner
from sentences import one_sentence

from svrt.cli import cli
from svrt.runtime.solver_config import SolverConfig
from svrt.settings import load_settings, read_table, specs, to_toml
from svrt.trainer.train_config import TrainConfig

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")


class Built(Exception):
    """Raised by the stand-in of the solve: carries the settings the command built."""

    def __init__(self, config):
        super().__init__("built")
        self.config = config


def run(args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=True)


def built(result):
    assert isinstance(result.exception, Built), (result.output, result.exception)
    return result.exception.config


@pytest.fixture()
def stop_after_settings(monkeypatch):
    """svrt deconvolve and svrt batch stop with :class:`Built` once their SolverConfig is made."""
    import svrt.runtime.batch_cli as batch_cli
    import svrt.runtime.cli as runtime_cli

    real = runtime_cli.solver_config

    def capture(*args, **kw):
        raise Built(real(*args, **kw))

    monkeypatch.setattr(runtime_cli, "solver_config", capture)
    monkeypatch.setattr(batch_cli, "solver_config", capture)


@pytest.fixture()
def toml_file(tmp_path):
    def write(text: str, name: str = "run.toml"):
        path = tmp_path / name
        path.write_text(text)
        return path
    return write


def deconvolve(tmp_path, *args):
    return run(["deconvolve", tmp_path / "burst.fits", "-o", tmp_path / "out.fits", *args])


# ------------------------------------------------------------------------------ generated options

def _options(command_name: str) -> dict[str, click.Parameter]:
    cmd = cli.get_command(click.Context(cli), command_name)
    return {p.name: p for p in cmd.params}, cmd


@pytest.mark.parametrize("command, cls, left_out", [
    ("deconvolve", SolverConfig, {"progress"}),                              # -q is progress = false
    ("batch", SolverConfig, {"progress", "checkpoint", "checkpoint_every"}),  # one checkpoint per run
    ("train", TrainConfig, set()),
])
def test_every_setting_has_an_option_with_the_dataclass_default(command, cls, left_out):
    params, cmd = _options(command)
    ctx = click.Context(cmd)
    fields = [f.name for f in dataclasses.fields(cls)]
    assert set(fields) - left_out <= set(params), set(fields) - left_out - set(params)
    defaults = cls()
    for name in set(fields) - left_out:
        p = params[name]
        assert p.type_cast_value(ctx, p.get_default(ctx)) == getattr(defaults, name), name
        assert f"--{name.replace('_', '-')}" in p.opts, p.opts
        assert p.help, name
    assert "--config" in [o for p in cmd.params for o in p.opts]


def test_option_values_parse_as_the_field_types(tmp_path, stop_after_settings):
    config = built(deconvolve(tmp_path, "--fit-modes", "none", "--node-iterations", "none", "--no-tiptilt",
                              "--time-budget", "12.5", "--lr-obj", "0.05", "--max-batch", "3", "--method", "adam",
                              "--checkpoint", tmp_path / "ck.safetensors"))
    assert config.fit_modes is None and config.node_iterations is None and config.tiptilt is False
    assert config.time_budget == 12.5 and config.lr_objects == 0.05 and config.max_batch == 3
    assert config.method == "adam" and config.checkpoint == str(tmp_path / "ck.safetensors")
    assert built(deconvolve(tmp_path, "--lr-objects", "0.07")).lr_objects == 0.07   # the field's own name


@pytest.mark.parametrize("option, value, why", [("--fit-modes", "many", "is not an integer"),
                                                 ("--grid", "-1", "grid"), ("--patch-size", "8", "patch_size"),
                                                 ("--tolerance", "nan", "finite"), ("--method", "lbfgs", "lbfgs"),
                                                 ("--lr-obj", "0", "lr_objects")])
def test_bad_option_value_is_a_usage_error_naming_the_option(tmp_path, stop_after_settings, option, value, why):
    r = deconvolve(tmp_path, option, value)
    assert r.exit_code == 2 and option in r.output and why in r.output and "Traceback" not in r.output, r.output


# ------------------------------------------------------------------------------ the file

def test_svrt_config_prints_toml_that_reads_back_to_the_defaults(tmp_path):
    for args, table, cls in (([], "solver", SolverConfig), (["--train"], "train", TrainConfig)):
        r = run(["config", *args])
        assert r.exit_code == 0, r.output
        data = tomllib.loads(r.output)
        groups = {s.group for s in specs(cls) if s.group}
        flat = {k: v for k, v in data[table].items() if k not in groups}
        for group in groups:
            flat.update(data[table][group])
        assert list(data) == [table] and set(flat) == {f.name for f in dataclasses.fields(cls)}
        assert set(data[table]) - set(flat) == groups
        path = tmp_path / f"{table}.toml"
        path.write_text(r.output)
        assert load_settings(path, table) == cls()
        assert run(["config", *args, path]).output.split("\n", 1)[1] == r.output.split("\n", 1)[1]  # a check of it


def test_toml_round_trip_of_settings_other_than_the_defaults(tmp_path):
    for table, config in (("solver", SolverConfig(method="adam", grid=0, fit_modes=None, time_budget=12.5,
                                                 lr_objects=10 ** -2.3, tiptilt=False, checkpoint="a b\"c.st")),
                          ("train", TrainConfig(instruments=["crisp8542"], minutes=1.5, residual=False))):
        path = tmp_path / f"{table}.toml"
        path.write_text(to_toml(table, config))
        assert load_settings(path, table) == config


def test_precedence_default_then_file_then_command_line(tmp_path, stop_after_settings, toml_file):
    path = toml_file("[solver]\ngrid = 8\niterations = 7\nprogress = false\nmax_batch = 2\n"
                     "[train]\nsteps = 3\n")  # another command's table: not read, not refused
    config = built(deconvolve(tmp_path, "--config", path, "--grid", "0", "--max-batch", "none"))
    assert config.grid == 0 and config.max_batch is None        # the command line wins over the file
    assert config.iterations == 7 and config.progress is False  # the file wins over the defaults
    assert config.patch_size == SolverConfig().patch_size       # the rest: defaults
    assert built(deconvolve(tmp_path, "--config", toml_file("[solver]\n", "empty.toml"))) == dataclasses.replace(
        SolverConfig(), progress=True)
    assert built(deconvolve(tmp_path, "-q")).progress is False


@pytest.mark.parametrize("text, needles", [
    ("[solver]\ngird = 8\n", ["run.toml", "[solver]", "'gird'", "nearest is 'grid'"]),
    ("[solver]\ngrid = \"big\"\n", ["run.toml", "[solver] grid must be an integer", '"big"']),
    ("[solver]\ngrid = 1.5\n", ["run.toml", "grid must be an integer", "1.5"]),
    ("[solver]\ngrid = true\n", ["run.toml", "grid must be an integer", "true"]),
    ("[solver]\ntolerance = inf\n", ["run.toml", "tolerance must be a finite number", "inf"]),
    ("[solver]\nfit_modes = \"all\"\n", ["run.toml", "fit_modes", 'or "none"']),
    ("[solver]\nmethod = \"lbfgs\"\n", ["run.toml", "method must be one of \"momfbd\", \"adam\""]),
    ("[solver]\ntiptilt = 1\n", ["run.toml", "tiptilt must be true or false"]),
    ("[solver]\npatch_size = 8\n", ["run.toml", "[solver.momfbd] patch_size must be in 16..4096"]),
    ("[solver.momfbd]\npatch_size = 8\n", ["run.toml", "[solver.momfbd] patch_size must be in 16..4096"]),
    ("[solver.adam]\npatch_size = 64\n", ["run.toml", "[solver.adam] holds 'patch_size'", "[solver.momfbd]"]),
    ("[solver.momfbd]\ngrid = 8\n", ["run.toml", "[solver.momfbd] holds 'grid'", "belongs in [solver]"]),
    ("[solver]\ngrid = 8\npatch_size = 32\n[solver.momfbd]\npatch_size = 48\n",
     ["run.toml", "[solver.momfbd] sets 'patch_size'", "[solver] sets as well"]),
    ("[solver.resources]\nmemory_mb = 0\n", ["run.toml", "[solver.resources] memory_mb must be in (0, 1e+08]"]),
    ("[solver]\nmemory_mb = 0\n", ["run.toml", "[solver.resources] memory_mb must be in (0, 1e+08]"]),
    ("[solvr]\ngrid = 8\n", ["run.toml", "unknown table [solvr]", "[solver]"]),
    ("grid = 8\n", ["run.toml", "'grid' is outside a table"]),
    ("[solver\ngrid = 8\n", ["run.toml", "is not valid TOML", "line 1"]),
])
def test_bad_file_is_one_sentence_naming_file_and_key(tmp_path, stop_after_settings, toml_file, text, needles):
    one_sentence(deconvolve(tmp_path, "--config", toml_file(text)), *needles)


def test_missing_file_and_tables_read_alone(tmp_path, toml_file):
    one_sentence(run(["config", tmp_path / "nowhere.toml"]), "nowhere.toml", "does not exist")
    path = toml_file("[solver]\ngrid = 4\n[train]\nwidth = 8\n")
    assert read_table(path, "solver") == {"grid": 4} and read_table(path, "train") == {"width": 8}


# ------------------------------------------------------------------------------ batch and train

def test_batch_reads_the_same_file_and_refuses_a_checkpoint(tmp_path, stop_after_settings, toml_file):
    path = toml_file("[solver]\ngrid = 16\nmethod = \"adam\"\n")
    config = built(run(["batch", tmp_path / "b.fits", "-o", tmp_path / "out", "--config", path, "--grid", "8"]))
    assert config.grid == 8 and config.method == "adam" and config.progress is False
    assert run(["batch", tmp_path / "b.fits", "-o", tmp_path / "out", "--checkpoint", "x"]).exit_code == 2  # no option


def test_batch_refuses_a_checkpoint_in_the_file(tmp_path, toml_file):
    path = toml_file("[solver]\ncheckpoint = \"state.safetensors\"\n")
    one_sentence(run(["batch", tmp_path / "b.fits", "-o", tmp_path / "out", "--config", path]),
                 "run.toml", "checkpoint", "state.safetensors")


def test_train_options_and_file(tmp_path, monkeypatch, toml_file):
    import svrt.trainer.train as train_module

    def fake_train(cfg, out, run_dir, command="", log=print):
        raise Built(cfg)

    monkeypatch.setattr(train_module, "train", fake_train)
    path = toml_file("[train]\nwidth = 8\nsteps = 50\ninstruments = [\"CRISP8542\"]\nweak_fraction = 0.5\n", "t.toml")
    cfg = built(run(["train", "-o", tmp_path / "m.safetensors", "--config", path, "--steps", "5", "--no-residual"]))
    assert (cfg.width, cfg.steps, cfg.weak_fraction, cfg.residual) == (8, 5, 0.5, False)
    assert cfg.instruments == ["crisp8542"] and cfg.lr_start == TrainConfig().lr_start
    bad = toml_file("[train]\nsteps = 0\n", "b.toml")
    one_sentence(run(["train", "-o", tmp_path / "m.safetensors", "--config", bad]), "b.toml",
                 "[train] steps must be an integer >= 1")
    r = run(["train", "-o", tmp_path / "m.safetensors", "--boundary", "mirror"])
    assert r.exit_code == 2 and "--boundary" in r.output


def test_specs_cover_every_field_type():
    for cls in (SolverConfig, TrainConfig):
        for spec in specs(cls):
            assert spec.help and spec.kind in (bool, int, float, str, list), spec


def test_help_imports_no_torch():
    """Building the generated options (and `svrt config`) must not import torch: --help stays fast."""
    code = ("import sys; from click.testing import CliRunner; from svrt.cli import cli\n"
            "for args in (['deconvolve', '--help'], ['batch', '--help'], ['train', '--help'], ['config', '--train']):\n"
            "    r = CliRunner().invoke(cli, args); assert r.exit_code == 0, r.output\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# ------------------------------------------------------------------------------ groups and declared ranges

def test_the_solver_table_is_written_in_groups(tmp_path):
    text = to_toml("solver", SolverConfig())
    data = tomllib.loads(text)["solver"]
    assert {"momfbd", "adam", "resources"} <= set(data)
    assert "patch_size" in data["momfbd"] and "tolerance" in data["momfbd"]
    assert "lr_objects" in data["adam"] and "iterations" in data["adam"]
    assert "memory_mb" in data["resources"] and "tile_size" in data["resources"] and "kernels" in data["resources"]
    assert "grid" in data and "method" in data and "patch_size" not in data
    assert "# [pixel] side of the patch" in text and "[in 16..4096]" in text     # help and declared range


def test_an_older_flat_settings_file_still_loads(toml_file):
    """A file of the flat layout (before the groups): every key in [solver] itself, read as before."""
    path = toml_file("[solver]\nmethod = \"adam\"\ngrid = 16\npatch_size = 48\niterations = 7\nlr_modes = 0.2\n"
                     "memory_mb = 512.0\ntile_overlap = 8\ntolerance = 0.01\n", "flat.toml")
    config = load_settings(path)
    assert config == SolverConfig(method="adam", grid=16, patch_size=48, iterations=7, lr_modes=0.2, memory_mb=512.0,
                                  tile_overlap=8, tolerance=0.01)
    # the same settings in groups read the same
    grouped = toml_file("[solver]\nmethod = \"adam\"\ngrid = 16\n[solver.momfbd]\npatch_size = 48\ntolerance = 0.01\n"
                        "[solver.adam]\niterations = 7\nlr_modes = 0.2\n[solver.resources]\nmemory_mb = 512.0\n"
                        "tile_overlap = 8\n", "grouped.toml")
    assert load_settings(grouped) == config


@pytest.mark.parametrize("kwargs, needles", [
    (dict(lr_objects=0.0), ["lr_objects must be in (0, 100]", "0.0"]),
    (dict(time_budget=0), ["time_budget must be in (0, 1e+07]"]),
    (dict(tile_size=16), ["tile_size must be in 32..65536"]),
    (dict(checkpoint_every=0), ["checkpoint_every must be in 1..100000"]),
    (dict(iterations=0), ["iterations must be in 1..100000"]),
    (dict(fit_modes=True), ["fit_modes must be an integer or None"]),
    (dict(grid=32.0), ["grid must be an integer in 0..65536", "32.0"]),
    (dict(tolerance=float("nan")), ["tolerance must be a finite number >= 0"]),
    (dict(method="lbfgs"), ['method must be one of "momfbd", "adam"']),
    (dict(select_frames=-1), ["select_frames must be > 0"]),
    (dict(tile_size=64, tile_overlap=32), ["tile_overlap (32) must be less than half of tile_size (64)"]),
])
def test_the_python_api_checks_what_each_setting_declares(kwargs, needles):
    """The ranges, types and choices are declared once, in setting(...), and checked from there for the Python API
    as for the file and the command line (validate keeps only the rules that tie two settings)."""
    from svrt.errors import SvrtError

    with pytest.raises(SvrtError) as e:
        SolverConfig(**kwargs)
    for needle in needles:
        assert needle in str(e.value), (needle, str(e.value))


def test_validate_declares_instead_of_rechecking():
    """Every range SolverConfig checks is a declaration: each number setting declares one."""
    import inspect

    source = inspect.getsource(SolverConfig.validate)
    assert source.count("raise SvrtError") <= 2          # the two rules that tie settings together
    for spec in specs(SolverConfig):
        if spec.kind in (int, float) and spec.name not in ("seed", "loss_scale"):
            assert spec.range, spec.name


def test_inner_functions_take_their_defaults_from_the_settings():
    """The patch stage and the object solve called without the argument do what the default settings do (they
    had their own, different literals: 40 vs 30 patch iterations, 30 / 1e-4 vs 20 / 1e-3 for the object solve)."""
    import inspect

    from svrt.runtime.object_solve import solve_objects
    from svrt.runtime.patch_mfbd import patch_wavefronts

    defaults = SolverConfig()
    patch = inspect.signature(patch_wavefronts).parameters
    assert patch["iterations"].default == defaults.patch_iterations
    assert patch["patch_size"].default == defaults.patch_size
    assert patch["start_rms"].default == defaults.start_rms
    obj = inspect.signature(solve_objects).parameters
    assert obj["iterations"].default == defaults.object_iterations
    assert obj["tolerance"].default == defaults.tolerance
