"""``svrt instruments``: print the registry."""

import click

from svrt.instruments import load_instruments


@click.command("instruments")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def instruments(as_json):
    """List the instrumental configurations with D, D2, pixel, wavelength and sampling lambda/(D pix).

    \b
    Example:
      svrt instruments
      SVRT_INSTRUMENTS=my_telescopes.json svrt instruments
    """
    reg = load_instruments()
    if as_json:
        import json
        click.echo(json.dumps({k: {**v.to_dict(), "sampling": v.sampling} for k, v in reg.items()}, indent=2))
        return
    head = (f"{'label':<12} {'telescope':<9} {'instr.':<8} {'idx':>3} {'D[cm]':>6} {'D2[cm]':>6} {'pix[as]':>7} "
            f"{'lambda[A]':>9} {'l/D[as]':>7} {'l/(D pix)':>9}  note")
    click.echo(head)
    for inst in reg.values():
        note = "" if inst.sampling >= 2 else "below Nyquist: PSF computed finer and binned"
        click.echo(f"{inst.label:<12} {inst.telescope:<9} {inst.instrument:<8} {inst.index:>3} "
                   f"{inst.diameter_cm:>6.1f} {inst.obscuration_cm:>6.1f} {inst.pixel_arcsec:>7.3f} "
                   f"{inst.wavelength_angstrom:>9.0f} {inst.diffraction_arcsec:>7.4f} {inst.sampling:>9.3f}  {note}")
