"""``svrt export``: a trained emulator -> ONNX graphs (forward and gradient) and TensorRT plans."""

from __future__ import annotations

from pathlib import Path

import click

from svrt.errors import SvrtError


def _size(path) -> str:
    n = Path(path).stat().st_size
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.0f} kB"


def _print_checks(checks: dict, title: str) -> None:
    click.echo(title)
    for kind, entry in checks.items():
        for name, d in entry.items():
            click.echo(f"  {kind:<7} {name:<11} max abs {d['max_abs']:.2e}  max rel {d['max_rel']:.2e}  L2 rel "
                       f"{d['l2_rel']:.2e}")


@click.command("export", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="name.onnx (ONNX graphs, plus name.plan with --tensorrt) or name.plan (TensorRT plans only).")
@click.option("--instrument", required=True, help="Instrument whose conditioning is folded into the graph (one graph "
                                                  "per instrument).")
@click.option("--fp16/--fp32", "fp16", default=False, show_default=True,
              help="Precision of the ONNX graph: FP16 convolutions, FP32 normalisation, inputs and outputs.")
@click.option(
    "--vjp/--no-vjp",
    default=True,
    show_default=True,
    help="Also write the vector-Jacobian product graph name.vjp.onnx (gradients for ONNX Runtime / TensorRT).",
)
@click.option("--opset", type=int, default=17, show_default=True, help="ONNX opset (>= 17).")
@click.option("--tensorrt", is_flag=True, help="Also build TensorRT plans name.plan (+ name.vjp.plan) on this GPU.")
@click.option("--plan-precision", type=click.Choice(["fp16", "fp32"]), default="fp16", show_default=True,
              help="Precision of the TensorRT plans (fp16 keeps the normalisation and residual in fp32).")
@click.option("--min-shape", default="1x64x64", show_default=True, help="Smallest BxYxX the plan accepts (multiples of "
                                                                        "16).")
@click.option("--opt-shape", default="1x256x256", show_default=True, help="BxYxX TensorRT tunes the plan for.")
@click.option("--max-shape", default="4x1024x1024", show_default=True, help="Largest BxYxX the plan accepts.")
@click.option("--workspace-gb", type=float, default=4.0, show_default=True, help="TensorRT builder workspace.")
@click.option("--gpu", type=int, default=0, show_default=True, help="CUDA device that builds (and will run) the plans.")
@click.option("--check/--no-check", default=True, show_default=True,
              help="Run the ONNX graphs with ONNX Runtime and compare with PyTorch (refuse to write on a gross "
                   "mismatch).")
@click.option("--check-size", type=int, default=64, show_default=True, help="Image size of the comparison (multiple of "
                                                                            "16).")
@click.option("--overwrite", is_flag=True, help="Replace existing output files.")
def export_command(model, output, instrument, fp16, vjp, opset, tensorrt, plan_precision, min_shape, opt_shape,
                   max_shape, workspace_gb, gpu, check, check_size, overwrite):
    """Export MODEL (a .safetensors file or a bundled model name) for one instrument to ONNX
    (BatchNorm and the instrument's conditioning folded in, dynamic batch and image size, metadata
    inside), with its gradient graph, and optionally to TensorRT plans for this GPU.

    \b
    Examples:
      svrt export svce-c16 -o crisp8542.onnx --instrument crisp8542
      svrt export model.safetensors -o crisp8542-fp16.onnx --instrument crisp8542 --fp16
      svrt export svce-c16 -o crisp8542.onnx --instrument crisp8542 --tensorrt \\
          --min-shape 1x64x64 --opt-shape 2x512x512 --max-shape 4x1024x1024

    Run the results with svrt.runtime.engine.load_engine("crisp8542.onnx") (ONNX Runtime) or
    load_engine("crisp8542.plan") (TensorRT); 'svrt engines' lists what this machine can run.
    """
    from svrt.export.onnx_export import export_onnx, load_for_export
    from svrt.fileio import check_output
    from svrt.runtime.backends.gradient_companion import vjp_path_for

    out = Path(output)
    suffix = out.suffix.lower()
    if suffix not in (".onnx", ".plan"):
        raise SvrtError(f"{out}: the output must end in .onnx (ONNX graphs) or .plan (TensorRT plans).")
    plans = tensorrt or suffix == ".plan"
    if check_size % 16 or check_size < 16:
        raise SvrtError(f"--check-size {check_size} must be a multiple of 16.")
    targets = []
    if suffix == ".onnx":
        targets += [out] + ([vjp_path_for(out)] if vjp else [])
    if plans:
        from svrt.export.tensorrt_build import check_profile, parse_shape
        from svrt.runtime.backends.tensorrt_backend import import_tensorrt, plan_metadata_path

        shapes = (parse_shape(min_shape, "--min-shape"), parse_shape(opt_shape, "--opt-shape"),
                  parse_shape(max_shape, "--max-shape"))
        check_profile(*shapes)
        import_tensorrt()  # before any work: the one-sentence install hint
        plan = out.with_suffix(".plan")
        targets += [plan, plan_metadata_path(plan)]
        if vjp:
            targets += [vjp_path_for(plan), plan_metadata_path(vjp_path_for(plan))]
    for t in targets:
        check_output(t, overwrite)
    from svrt.emulator import model_kind

    if model_kind(model) == "psf-basis":
        _export_psf_basis(model, out, instrument, fp16, plans, vjp, check)
        return

    net, meta = load_for_export(model)
    net.one_hot(instrument)  # an instrument the model was not trained for: one sentence, before any work
    click.echo(f"model {meta.get('name', model)} (hash {meta.get('sha256', '?')}, width {net.config.width}, "
               f"{net.config.n_modes} modes), instrument {instrument}")
    if suffix == ".onnx":
        precision = "fp16" if fp16 else "fp32"
        result = export_onnx(net, out, instrument, precision=precision, vjp=vjp, opset=opset, check=check,
                             check_size=check_size, meta=meta)
        kinds = ["forward", "gradient (VJP)"]
        for f, kind in zip(result.files, kinds):
            click.echo(f"wrote {f} ({kind} graph, {precision}, opset {opset}, {_size(f)})")
        click.echo(f"export{' and check' if check else ''} took {result.seconds:.1f} s")
        if result.checks:
            _print_checks(result.checks, f"ONNX Runtime (CPU) vs PyTorch FP32, batch 2 of {check_size}x{check_size} "
                                         "(random and granulation inputs):")
    if plans:
        from svrt.export.tensorrt_build import export_tensorrt

        written = export_tensorrt(net, meta, instrument, plan, precision=plan_precision, vjp=vjp, min_shape=shapes[0],
                                  opt_shape=shapes[1], max_shape=shapes[2], workspace_gb=workspace_gb, device=gpu,
                                  opset=opset)
        for f in written:
            click.echo(f"wrote {f}" + ("" if f.endswith(".json") else f" (TensorRT, {plan_precision}, {_size(f)})"))
        if check:
            from svrt.export.onnx_export import compare_engine
            from svrt.runtime.backends.tensorrt_backend import TensorRTEngine

            engine = TensorRTEngine.load(plan, device=f"cuda:{gpu}")
            size = min(max(check_size, shapes[0][1], shapes[0][2]), shapes[2][1], shapes[2][2])
            batch = min(2, shapes[2][0])
            checks = compare_engine(engine, net, instrument, size=size, batch=batch, gradient=vjp)
            engine.close()
            _print_checks(checks, f"TensorRT vs PyTorch FP32, batch {batch} of {size}x{size}:")


def _export_psf_basis(model, out: Path, instrument: str, fp16: bool, plans: bool, vjp: bool, check: bool) -> None:
    """``svrt export`` of a PSF-basis emulator: its PSF graphs (svrt.export.psf_basis_graphs), FP32 ONNX."""
    from svrt.export.psf_basis_graphs import export_psf_basis_onnx
    from svrt.psf_emulator import load_psf_emulator

    net, meta = load_psf_emulator(model)
    if instrument.lower() != net.config.instrument.lower():
        raise SvrtError(f"{model} is a PSF-basis emulator of {net.config.instrument}, not '{instrument}'; train one "
                        f"for it with 'svrt train-psf-basis --instrument {instrument}'.")
    if plans or fp16:
        raise SvrtError(f"{model} is a PSF-basis emulator: it exports to FP32 ONNX only (its graphs are small; the "
                        "convolution around them runs in the runtime); drop --tensorrt, --fp16 and .plan.")
    click.echo(f"PSF-basis emulator {meta.get('name', model)} (hash {meta.get('sha256', '?')}, "
               f"{net.config.n_basis} basis PSFs, {net.config.n_modes} modes), instrument {net.config.instrument}")
    meta.setdefault("name", Path(str(model)).stem)
    result = export_psf_basis_onnx(net, out, vjp=vjp, check=check, meta=meta)
    for f, kind in zip(result["files"], ["forward (PSFs)", "gradient (VJP)"]):
        click.echo(f"wrote {f} ({kind} graph, fp32, {_size(f)})")
    if result["checks"]:
        click.echo("ONNX Runtime (CPU) vs PyTorch on 64 wavefronts, max relative difference: " + ", ".join(
            f"{k} {v:.1e}" for k, v in result["checks"].items()))
