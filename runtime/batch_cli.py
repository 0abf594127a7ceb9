"""``svrt batch``: the command line of :mod:`svrt.runtime.batch` (many bursts, resumable, on Dask).

The engine and solver options are those of ``svrt deconvolve`` (the same click options, generated from
:class:`~svrt.runtime.solver_config.SolverConfig`, and the same ``--config`` settings file), so one
setting means the same in both; only the checkpoint, which is one file per run, is left out.
"""

from __future__ import annotations

import time
from pathlib import Path

import click

from svrt.errors import SvrtError
from svrt.runtime.cli_options import CONTEXT, check_device, engine_options, solver_config, solver_options
from svrt.settings_cli import config_file_option, with_options

#: settings of one restoration, not of a batch: one checkpoint file would be shared by every burst
_NOT_BATCH = ("checkpoint", "checkpoint_every")


def _check_out_dir(out_dir) -> None:
    """Before any burst: --out-dir is (or can become) a folder that accepts files (the restorations, logs/,
    batch-summary.tsv), one sentence otherwise instead of a traceback from the first burst's log."""
    from svrt.fileio import check_writable

    folder = Path(out_dir)
    if folder.exists() and not folder.is_dir():
        raise SvrtError(f"--out-dir {out_dir} is a file; expected a folder for the restorations.")
    try:
        check_writable(folder / "logs" / "batch-summary.tsv", overwrite=True)
    except SvrtError as exc:
        raise SvrtError(f"--out-dir {out_dir}: {exc}") from None


@click.command("batch", context_settings=CONTEXT)
@click.argument("bursts", nargs=-1, metavar="[BURST|'GLOB']...")
@click.option("--manifest", default=None, type=click.Path(dir_okay=False),
              help="Text file listing one burst path per line (# comments; paths relative to the file).")
@click.option("-o", "--out-dir", required=True, type=click.Path(file_okay=False),
              help="Folder of the restorations (<burst name>.fits), logs/<burst name>.log and batch-summary.tsv.")
@click.option("--format", "fmt", default="fits", show_default=True, type=click.Choice(["fits", "h5"]),
              help="Format of the restorations.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(0, 4096),
              help="Dask worker processes on this machine (a LocalCluster; one GPU each with dask-cuda and "
                   "--device cuda); 0: restore in this process, without Dask.")
@click.option("--scheduler", default=None,
              help="Address of a running Dask scheduler, e.g. tcp://host:8786, or its scheduler file (SLURM/PBS: "
                   "dask-jobqueue, see docs/PIPELINE.md); then --workers is not used.")
@click.option("--threads-per-worker", "threads", default=None, type=click.IntRange(1, 1024),
              help="torch intra-op threads of each worker [default: 1 on Dask workers, torch's own in this process].")
@with_options(engine_options)
@config_file_option("solver")
@with_options(solver_options(exclude=_NOT_BATCH))
@click.option("--instrument", "instrument", multiple=True,
              help="Instrument of each object for files that do not name it (repeat for K objects).")
@click.option("--allow-nonfinite", is_flag=True, help="Give NaN/Inf pixels zero weight instead of failing the burst.")
@click.option("--drop-dead-frames", is_flag=True, help="Leave out dead (constant) frames instead of failing the burst.")
@click.option("--overwrite", is_flag=True, help="Restore again the bursts whose output exists [default: skip them].")
@click.option("--png", is_flag=True, help="Also write a quick-look PNG next to each restoration.")
@click.option("-q", "--quiet", is_flag=True, help="No status line per burst (the summary is still printed).")
@click.pass_context
def batch_command(ctx, bursts, manifest, out_dir, fmt, workers, scheduler, threads, engine_paths, model, backend, device,
                  instrument, allow_nonfinite, drop_dead_frames, overwrite, png, quiet, config_file, **solver_kw):
    """Restore many bursts: one restoration per burst in --out-dir, skipping those already there.

    Bursts are files, quoted globs ('night/*.fits', '**' recursive) or a --manifest. Each burst gets
    a status line as it finishes and a log file (logs/<name>.log: settings, every iteration, the
    outcome or the traceback); a failed burst (bad file, solver error) does not stop the others. At
    the end a summary table; batch-summary.tsv holds one row per burst. Run the same command again to
    resume a killed batch. Exit status: 0 when no burst failed, 1 when any did, 2 for bad arguments.

    \b
    Examples:
      svrt batch 'night/*.fits' -o restored/ --workers 2
      svrt batch --manifest bursts.txt -o restored/ --workers 0 --grid 32
      svrt batch 'night/**/*.fits' -o /shared/restored --scheduler tcp://head:8786 --device cuda
      svrt batch 'night/*.fits' -o restored/ --config run.toml   # settings file: svrt config > run.toml
    """
    from svrt.runtime.batch import EngineSpec, find_bursts, plan_jobs, run_batch, summary_table, write_summary

    check_device(device)
    if scheduler is not None and ctx.get_parameter_source("workers") == click.core.ParameterSource.COMMANDLINE:
        raise click.UsageError("give --workers (a local cluster) or --scheduler (an existing one), not both.")
    config = solver_config(config_file, solver_kw, progress=False)  # many workers' bars would be noise
    if config.checkpoint is not None:
        raise SvrtError(f"{config_file}: [solver] checkpoint is a setting of svrt deconvolve; svrt batch would write "
                        f"every burst's state to the one file {config.checkpoint}: leave it out or set it to \"none\".")
    _check_out_dir(out_dir)
    jobs = plan_jobs(find_bursts(bursts, manifest, exclude=out_dir), out_dir, fmt)
    if engine_paths and scheduler is None:
        for p in engine_paths:
            if not Path(p).exists():
                raise SvrtError(f"engine file {p} does not exist.")
    spec = EngineSpec(tuple(str(Path(p).resolve()) for p in engine_paths), model, backend, device, config.precision)
    options = dict(instrument=list(instrument) or None, allow_nonfinite=allow_nonfinite, drop_dead_frames=drop_dead_frames,
                   overwrite=overwrite, png=png)
    width = len(str(len(jobs)))
    name_width = min(40, max(len(j.name) for j in jobs))

    def status(outcome, n, total):
        if quiet:
            return
        t = f"{outcome.seconds:7.1f} s" if outcome.status != "skipped" else " " * 9
        click.echo(f"[{n:>{width}}/{total}] {outcome.status:<7} {outcome.name:<{name_width}} {t}  {outcome.message}")

    where = f"scheduler {scheduler}" if scheduler else (f"{workers} Dask worker(s)" if workers else "this process")
    if not quiet:
        click.echo(f"{len(jobs)} burst(s) -> {Path(out_dir).resolve()} on {where}")
    info: dict = {}
    t0 = time.perf_counter()
    outcomes = run_batch(jobs, spec, config, workers=workers, scheduler=scheduler, threads=threads, options=options,
                         on_outcome=status, cluster_info=info)
    wall = time.perf_counter() - t0 - info.get("start_s", 0.0)
    order = {j.name: i for i, j in enumerate(jobs)}
    outcomes.sort(key=lambda o: order.get(o.name, 0))
    write_summary(Path(out_dir) / "batch-summary.tsv", outcomes)
    click.echo(summary_table(outcomes, wall_s=wall, workers=info.get("workers") or (workers or 1)))
    if any(o.status == "failed" for o in outcomes):
        ctx.exit(1)
