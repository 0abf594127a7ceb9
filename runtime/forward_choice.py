"""The one rule for the forward model a restoration uses when the caller names none.

Every entry point goes through :func:`default_forward_model`: ``svrt deconvolve``, ``svrt batch``,
``svrt demo``, :func:`svrt.runtime.solver.load_solver_engine` called without a model (the Python API
and the README's snippet) and the streaming :class:`~svrt.runtime.streaming.Restorer` given no engine,
so one burst with one set of settings gives one restoration whichever way it was asked for. The choice
and its reason are written into every restoration header (FWDMODEL, FWDWHY; see :func:`forward_cards`).

The rule, by measurement (README, "Restoration quality"; docs/ENGINE.md; issue 20): exact optics (PSFs
interpolated between the grid nodes, back end ``psf-interpolation``) for every method and every device. It
restored better than the paper's U-Net emulator on every burst tried (median NMSE_var 0.034 against
torchmfbd's 0.106 on the 36 peer bursts; 0.013 against 0.18 with svce-c16 on a 128^2 r0 12 cm burst). The
PSF-basis engine ``psfb-crisp8542`` (svrt.psf_emulator) restores the peer bursts as well as exact optics (within
1.2x: docs/ENGINE.md), but on the CPU its steps cost 1.2-1.5x exact optics' (its network and 256-PSF basis
against the exact PSFs' small FFTs), so it does not become the CPU default: exact optics is the reference and
no slower. On a GPU (not measured yet: no GPU was lent) the arguments are there to choose differently per
device, here, in this one place.
"""

from __future__ import annotations

__all__ = ["EXACT_OPTICS", "default_forward_model", "forward_cards"]

#: the back end of the exact optics (svrt.runtime.backends.psf_interpolation_backend)
EXACT_OPTICS = "psf-interpolation"

_WHY_EXACT = "default: exact optics, the reference (the engine ties, not faster)"
#: FWDWHY of an engine the caller chose (a file, a model name, a back end or an Engine object)
NAMED = "named by the caller"


def default_forward_model(method: str | None = None, device: str | None = None) -> tuple[str, str]:
    """``(backend, reason)``: the back end that drives a restoration with ``method`` ('momfbd', 'adam' or None
    for any) on ``device`` ('cpu', 'cuda', ...) when no engine, model or back end is named, and the reason in
    at most 68 characters (a FITS card value). Today exact optics everywhere (see the module doc)."""
    del method, device  # the same for every method and device until a GPU measurement says otherwise
    return EXACT_OPTICS, _WHY_EXACT


def forward_cards(engine) -> dict:
    """The header cards that say which forward model drove a restoration and why: FWDMODEL ('exact optics' or
    'emulator <model> (<backend>)') and FWDWHY (the default rule's reason, or that the caller named it).
    ``engine.chosen_because`` is set by :func:`svrt.runtime.solver.load_solver_engine` when it applied the rule."""
    ident = engine.identity
    model = "exact optics" if ident.backend == EXACT_OPTICS else f"emulator {ident.model} ({ident.backend})"
    why = getattr(engine, "chosen_because", None) or NAMED
    return {"FWDMODEL": model[:68], "FWDWHY": str(why)[:68]}
