"""The one rule for the forward model a restoration uses when the caller names none.

Every entry point goes through :func:`default_forward_model`: ``svrt deconvolve``, ``svrt batch``,
``svrt demo``, :func:`svrt.runtime.solver.load_solver_engine` called without a model (the Python API
and the README's snippet) and the streaming :class:`~svrt.runtime.streaming.Restorer` given no engine,
so one burst with one set of settings gives one restoration whichever way it was asked for. The choice
and its reason are written into every restoration header (FWDMODEL, FWDWHY; see :func:`forward_cards`).

The rule, by measurement (README, "Restoration quality"; issue 20): exact optics (PSFs interpolated
between the grid nodes, back end ``psf-interpolation``) for every method and every device, because it
restored better than the shipped emulator on every burst tried: median NMSE_var 0.034 against
torchmfbd's 0.106 on the 36 peer bursts; 0.013 against 0.18 with the svce-c16 emulator on a 128^2
r0 12 cm burst; method adam 0.168 against 0.180 (mean of 5 seeds). An emulator becomes the default
(for a method or a device: the arguments are there for that) only once restorations driven by it are
measured within 1.2x of exact optics' NMSE_var on bursts that svrt's own model did not make
(shared/DESIGN.md), and then it is changed here, in this one place.
"""

from __future__ import annotations

__all__ = ["EXACT_OPTICS", "default_forward_model", "forward_cards"]

#: the back end of the exact optics (svrt.runtime.backends.psf_interpolation_backend)
EXACT_OPTICS = "psf-interpolation"

_WHY_EXACT = "default: exact optics restores best (no emulator within 1.2x)"
#: FWDWHY of an engine the caller chose (a file, a model name, a back end or an Engine object)
NAMED = "named by the caller"


def default_forward_model(method: str | None = None, device: str | None = None) -> tuple[str, str]:
    """``(backend, reason)``: the back end that drives a restoration with ``method`` ('momfbd', 'adam' or None
    for any) on ``device`` ('cpu', 'cuda', ...) when no engine, model or back end is named, and the reason in
    at most 68 characters (a FITS card value). Today exact optics everywhere (see the module doc)."""
    del method, device  # the same for every method and device until an emulator is measured within 1.2x
    return EXACT_OPTICS, _WHY_EXACT


def forward_cards(engine) -> dict:
    """The header cards that say which forward model drove a restoration and why: FWDMODEL ('exact optics' or
    'emulator <model> (<backend>)') and FWDWHY (the default rule's reason, or that the caller named it).
    ``engine.chosen_because`` is set by :func:`svrt.runtime.solver.load_solver_engine` when it applied the rule."""
    ident = engine.identity
    model = "exact optics" if ident.backend == EXACT_OPTICS else f"emulator {ident.model} ({ident.backend})"
    why = getattr(engine, "chosen_because", None) or NAMED
    return {"FWDMODEL": model[:68], "FWDWHY": str(why)[:68]}
