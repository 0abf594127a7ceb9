"""``svrt bench``: benchmark the emulator against the exact and overlap-add convolutions, and SV-MOMFBD."""

from __future__ import annotations

import shlex
from pathlib import Path

import click

from svrt.errors import SvrtError


def _ints(text: str | None, option: str) -> tuple | None:
    if text is None:
        return None
    try:
        vals = tuple(int(v) for v in str(text).split(",") if v.strip())
    except ValueError:
        raise SvrtError(f"{option} takes a comma-separated list of integers; got '{text}'.") from None
    if not vals or any(v < 1 for v in vals):
        raise SvrtError(f"{option} takes positive integers; got '{text}'.")
    return vals


def _cases(text: str | None) -> tuple | None:
    if text is None:
        return None
    if text.strip().lower() in ("none", "off", "0", ""):
        return ()
    out = []
    for part in text.split(","):
        try:
            size, frames, objects, nodes = (int(v) for v in part.lower().split("x"))
        except ValueError:
            raise SvrtError(f"--restoration takes SIZExFRAMESxOBJECTSxNODES cases (e.g. 128x4x2x16) or 'none'; "
                            f"got '{part}'.") from None
        out.append((size, frames, objects, nodes))
    return tuple(out)


def _command_line(ctx: click.Context) -> str:
    """The command as typed (the options given on the command line, in a canonical order)."""
    from click.core import ParameterSource

    words = ["svrt", "bench"]
    for param in ctx.command.params:
        if ctx.get_parameter_source(param.name) != ParameterSource.COMMANDLINE:
            continue
        value = ctx.params[param.name]
        flag = param.opts[0]
        if getattr(param, "is_flag", False):
            if value:
                words.append(flag)
            elif getattr(param, "secondary_opts", None):
                words.append(param.secondary_opts[0])
        else:
            words += [flag, str(value)]
    return " ".join(shlex.quote(w) for w in words)


@click.command("bench", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--peers", is_flag=True,
              help="Run the peer benchmark instead (svrt against torchmfbd and the frame average on the same "
                   "simulated bursts; python -m svrt.benchmarks.peers --help lists its options, which are passed on).")
@click.option("--model", "model", default=None, metavar="NAME|PATH",
              help="Bundled model name or .safetensors path (default svce-c16; a random width-16 network if absent).")
@click.option("--full", is_flag=True, help="All sizes up to 1024^2, batches up to 16, every back end, the paper's "
                                           "restoration case.")
@click.option("--out-dir", "out_dir", type=click.Path(file_okay=False), default="bench-results", show_default=True,
              help="Where bench.json and bench.png are written.")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda[:i].")
@click.option("--backends", default=None, metavar="LIST",
              help="Comma-separated back ends among torch, torch-compiled, onnxruntime, tensorrt "
                   "(default: quick torch,onnxruntime on CPU, +tensorrt on CUDA; --full all).")
@click.option(
    "--precisions", default=None, metavar="LIST", help="fp32 and/or fp16 (default fp32 on CPU, both on CUDA)."
)
@click.option("--sizes", default=None, metavar="LIST", help="Image sizes, e.g. 64,128,256 (overrides the preset).")
@click.option("--batches", default=None, metavar="LIST", help="Batch sizes, e.g. 1,4.")
@click.option("--exact-sizes", "exact_sizes", default=None, metavar="LIST",
              help="Sizes at which the exact per-pixel method is run (others are extrapolated).")
@click.option("--repeats", type=click.IntRange(1), default=None, help="Timed repetitions per case (median reported).")
@click.option("--warmup", type=click.IntRange(0), default=None, help="Untimed calls before timing.")
@click.option("--restoration", default=None, metavar="CASES",
              help="SV-MOMFBD cases SIZExFRAMESxOBJECTSxNODES, comma-separated, or 'none' (quick: 128x4x2x16).")
@click.option("--iterations", type=click.IntRange(1), default=None, help="SV-MOMFBD iterations per case (the first is "
                                                                         "not timed).")
@click.option("--results-page", "results_page", type=click.Path(dir_okay=False), default=None,
              help="Update this machine's section of a Markdown results page (e.g. benchmarks/RESULTS.md).")
@click.option("--label", default=None, help="Machine name in the results page (default from the hardware).")
@click.option("--threads", type=click.IntRange(1), default=None,
              help="CPU threads for torch and ONNX Runtime (default: their own defaults).")
@click.option("--progress/--no-progress", default=True, help="Progress bar on stderr.")
@click.pass_context
def bench_command(ctx, peers, model, full, out_dir, device, backends, precisions, sizes, batches, exact_sizes, repeats,
                  warmup, restoration, iterations, results_page, label, threads, progress):
    """Time the emulated spatially variant convolution (every back end present) against the exact
    per-pixel method and overlap-add of invariant patches (paper Fig. 6), time SV-MOMFBD iterations
    with their peak memory, and put each figure next to the machine's measured ceilings.

    \b
    Writes OUT_DIR/bench.json (machine, versions, commit, command, every record) and OUT_DIR/bench.png.
    The quick default takes a few minutes on a 2-core CPU:
      svrt bench --out-dir bench-results
      svrt bench --device cuda --full --out-dir bench-gpu --results-page benchmarks/RESULTS.md
      svrt bench --peers --out-dir peers-results --sizes 128 --seeds 1
    """
    if peers:
        return _run_peers(ctx)
    if ctx.args:
        raise click.UsageError(f"No such option: {ctx.args[0]} (options of --peers only work with --peers).")
    from dataclasses import replace

    from svrt.benchmarks.engines import parse_backends
    from svrt.benchmarks.suite import BenchSettings, run_benchmark

    settings = BenchSettings.full(device) if full else BenchSettings.quick(device)
    changes = {}
    b = parse_backends(backends)
    if b is not None:
        changes["backends"] = tuple(b)
    if precisions is not None:
        p = tuple(s.strip() for s in precisions.split(",") if s.strip())
        bad = [s for s in p if s not in ("fp32", "fp16")]
        if bad or not p:
            raise SvrtError(f"--precisions takes fp32 and/or fp16; got '{precisions}'.")
        changes["precisions"] = p
    for name, text in (("sizes", sizes), ("batches", batches), ("exact_sizes", exact_sizes)):
        v = _ints(text, "--" + name.replace("_", "-"))
        if v is not None:
            changes[name] = v
    given = {"repeats": repeats, "warmup": warmup, "restoration": _cases(restoration), "iterations": iterations,
             "threads": threads}
    changes.update({name: value for name, value in given.items() if value is not None})
    if sizes is not None and exact_sizes is None:
        keep = tuple(s for s in settings.exact_sizes if s in changes["sizes"])
        changes["exact_sizes"] = keep or changes["sizes"][:1]
    settings = replace(settings, **changes)
    run_benchmark(Path(out_dir), model=model, device=device, full=full, settings=settings, command=_command_line(ctx),
                  progress=progress, results_page=results_page, label=label, echo=click.echo)


def _run_peers(ctx: click.Context) -> None:
    """``svrt bench --peers``: the options bench shares with the peer benchmark (--out-dir, --sizes, --device,
    --threads, --results-page, --progress), as given on the command line, plus everything else unchanged."""
    from click.core import ParameterSource

    from svrt.benchmarks.peers import peers_command

    args = []
    for name in ("out_dir", "sizes", "device", "threads", "results_page"):
        if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE:
            args += ["--" + name.replace("_", "-"), str(ctx.params[name])]
    if ctx.get_parameter_source("progress") == ParameterSource.COMMANDLINE and not ctx.params["progress"]:
        args.append("--no-progress")
    unused = [n for n in ("model", "full", "backends", "precisions", "batches", "exact_sizes", "repeats", "warmup",
                          "restoration", "iterations", "label")
              if ctx.get_parameter_source(n) == ParameterSource.COMMANDLINE]
    if unused:
        raise SvrtError(f"--{unused[0].replace('_', '-')} is an option of the convolution benchmark, not of --peers.")
    peers_command.main(args=args + list(ctx.args), prog_name="svrt bench --peers", standalone_mode=False)
