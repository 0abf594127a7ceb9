"""The number of wavefront modes is named once (svrt.mode_grid.N_MODES) and every default uses it: the literal 44
was typed in a dozen signatures, any of which could drift from the rest."""

from __future__ import annotations

import inspect
import pathlib
import re

from svrt.mode_grid import N_MODES

ROOT = pathlib.Path(__file__).resolve().parents[1]
#: files allowed to type the number (none)
LEFT: set = set()


def test_no_default_types_the_number_of_modes():
    pattern = re.compile(r"(n_modes\s*(:\s*int\s*)?=\s*44\b|default=44\b|setting\(44\b|n_modes = 44 if)")
    found = []
    for folder in ("svrt", "runtime", "trainer", "export", "kernels"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel in LEFT:
                continue
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if pattern.search(line) and not line.strip().startswith(">>>"):   # a doctest's call is no default
                    found.append(f"{rel}:{n}: {line.strip()}")
    assert found == []


def test_the_defaults_are_the_constant():
    from svrt.atmosphere import kolmogorov_coefficients
    from svrt.emulator import EmulatorConfig
    from svrt.optics.kl import kl_basis
    from svrt.optics.psf import PSFModel
    from svrt.simulate import simulate_burst
    from svrt.trainer.train_config import TrainConfig

    assert N_MODES == 44                                   # the paper's M
    for fn in (kl_basis.__wrapped__, PSFModel.__init__, kolmogorov_coefficients, simulate_burst):
        assert inspect.signature(fn).parameters["n_modes"].default == N_MODES, fn
    assert EmulatorConfig().n_modes == N_MODES and TrainConfig().n_modes == N_MODES
