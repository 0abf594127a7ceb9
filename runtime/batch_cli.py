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


def _say_unless(quiet: bool):
    """click.echo on stderr, or nothing with -q."""
    return (lambda line: None) if quiet else (lambda line: click.echo(line, err=True))


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
@click.option("--cluster", "cluster_kind", default="local", show_default=True, type=click.Choice(["local", "slurm"]),
              help="local: --workers N on this machine (or --scheduler); slurm: submit the SLURM jobs of the "
                   "[cluster] table of --config (dask-jobqueue; docs/PIPELINE.md, section SLURM).")
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
def batch_command(ctx, bursts, manifest, out_dir, fmt, workers, scheduler, cluster_kind, threads, engine_paths, model,
                  backend, device, instrument, allow_nonfinite, drop_dead_frames, overwrite, png, quiet, config_file,
                  **solver_kw):
    """Restore many bursts: one restoration per burst in --out-dir, skipping those already there.

    Bursts are files, quoted globs ('night/*.fits', '**' recursive) or a --manifest. Each burst gets
    a line on stderr as it starts and as it ends (and a bar on a terminal), and a log file
    (logs/<name>.log: settings, every iteration as it runs, the outcome or the traceback); the Dask
    dashboard's address is printed. A failed burst (bad file, solver error) does not stop the others. At
    the end a summary table; batch-summary.tsv holds one row per burst. Run the same command again to
    resume a killed batch. Exit status: 0 when no burst failed, 1 when any did, 2 for bad arguments.

    \b
    Examples:
      svrt batch 'night/*.fits' -o restored/ --workers 2
      svrt batch --manifest bursts.txt -o restored/ --workers 0 --grid 32
      svrt batch 'night/**/*.fits' -o /shared/restored --scheduler tcp://head:8786 --device cuda
      svrt batch 'night/*.fits' -o restored/ --config run.toml   # settings file: svrt config > run.toml
      svrt batch '/shared/night/*.fits' -o /shared/restored --cluster slurm --config run.toml   # [cluster]
    """
    from svrt.runtime.batch import EngineSpec, find_bursts, plan_jobs, run_batch, summary_table, write_summary
    from svrt.runtime.batch_progress import BatchWatch
    from svrt.runtime.cluster import open_cluster

    check_device(device)
    if scheduler is not None and ctx.get_parameter_source("workers") == click.core.ParameterSource.COMMANDLINE:
        raise click.UsageError("give --workers (a local cluster) or --scheduler (an existing one), not both.")
    if cluster_kind == "slurm" and (scheduler is not None or
                                    ctx.get_parameter_source("workers") == click.core.ParameterSource.COMMANDLINE):
        raise click.UsageError("give --cluster slurm (the [cluster] table sets the workers) or --workers/--scheduler, "
                               "not both.")
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
    info: dict = {}
    with open_cluster(cluster_kind, config_file, threads, say=_say_unless(quiet)) as slurm_scheduler:
        scheduler = scheduler or slurm_scheduler
        where = f"scheduler {scheduler}" if scheduler else (f"{workers} Dask worker(s)" if workers else "this process")
        if not quiet:
            click.echo(f"{len(jobs)} burst(s) -> {Path(out_dir).resolve()} on {where}")
        t0 = time.perf_counter()
        # start and end lines on stderr, flushed, and a bar on a terminal (svrt.runtime.batch_progress)
        with BatchWatch([j.name for j in jobs], quiet=quiet) as watch:
            outcomes = run_batch(jobs, spec, config, workers=workers, scheduler=scheduler, threads=threads,
                                 options=options, on_outcome=watch.ended, cluster_info=info, on_client=watch.attach)
        wall = time.perf_counter() - t0 - info.get("start_s", 0.0)  # before the SLURM jobs are cancelled
    order = {j.name: i for i, j in enumerate(jobs)}
    outcomes.sort(key=lambda o: order.get(o.name, 0))
    write_summary(Path(out_dir) / "batch-summary.tsv", outcomes)
    click.echo(summary_table(outcomes, wall_s=wall, workers=info.get("workers") or (workers or 1)))
    if any(o.status == "failed" for o in outcomes):
        ctx.exit(1)
