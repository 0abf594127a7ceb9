"""The Dask clusters of ``svrt batch`` that come from settings: a SLURM allocation through dask-jobqueue
(the ``[cluster]`` table of a settings file), and the line that says where the cluster's dashboard is.

The SLURM recipe (docs/PIPELINE.md, section SLURM)::

    # run.toml
    [cluster]
    queue = "normal"                       # sbatch -p
    account = "solar"                      # sbatch -A
    cores = 4                              # per job: 4 single-threaded Dask workers
    memory = "32GB"                        # per job
    walltime = "12:00:00"
    jobs = 16                              # 64 workers in all
    job_script_prologue = ["source /shared/svrt/.venv/bin/activate"]

    svrt batch '/shared/night/*.fits' -o /shared/restored --cluster slurm --config run.toml

svrt starts the Dask scheduler in its own process (the login node), submits ``jobs`` SLURM jobs whose
workers connect back to it, restores the bursts as workers join, and cancels the jobs at the end. Each
worker has one thread and one torch thread (``OMP_NUM_THREADS`` set in the job script), the rule of
svrt on CPUs; ``--threads-per-worker`` changes both. Python API::

    from svrt.runtime.cluster import ClusterConfig, slurm_cluster
    with slurm_cluster(ClusterConfig(queue="normal", jobs=16)) as cluster:
        print(cluster.job_script())                     # what sbatch gets
        cluster.scale(jobs=16)
        run_batch(jobs, spec, config, scheduler=cluster.scheduler_address)

dask-jobqueue is imported only here and only for ``--cluster slurm`` (``pip install 'svrt[cluster]'``).
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from svrt.errors import SvrtError
from svrt.settings import setting

__all__ = ["ClusterConfig", "CLUSTER_KINDS", "open_cluster", "slurm_cluster", "dashboard_line", "dashboard_link"]

#: values of ``svrt batch --cluster``: a LocalCluster / an existing scheduler / in this process, or SLURM
CLUSTER_KINDS = ("local", "slurm")

_MEMORY = re.compile(r"^\s*\d+(\.\d+)?\s*[kmgtp]i?b\s*$", re.IGNORECASE)
_WALLTIME = re.compile(r"^(\d+-)?\d{1,3}:\d{2}(:\d{2})?$")  # [D-]HH:MM[:SS], as sbatch --time takes it


@dataclass(frozen=True)
class ClusterConfig:
    """The ``[cluster]`` table: the SLURM jobs that ``svrt batch --cluster slurm`` submits (one
    ``dask_jobqueue.SLURMCluster``). Every job runs ``processes`` Dask workers of one thread each."""

    queue: str | None = setting(None, help="SLURM partition of the jobs (sbatch -p) [default: the site's default].")
    account: str | None = setting(None, help="SLURM account the jobs are charged to (sbatch -A).")
    cores: int = setting(1, help="CPU cores per job (sbatch --cpus-per-task).")
    processes: int | None = setting(None, help="Dask worker processes per job, one thread each [default: one per "
                                               "core, the svrt rule on CPUs; with --device cuda: the GPUs per job].")
    memory: str = setting("8GB", help="Memory per job, shared by its workers, e.g. '8GB', '32GiB' (sbatch --mem).")
    walltime: str = setting("12:00:00", help="Wall-time limit per job, [D-]HH:MM[:SS] (sbatch -t); a job killed "
                                             "by it loses only its current burst: run the batch again.")
    jobs: int = setting(1, help="Number of SLURM jobs submitted (workers = jobs x processes).")
    job_extra_directives: list[str] = setting(default_factory=list,
                                              help="More #SBATCH lines, e.g. ['--gres=gpu:1', '--constraint=x86'].")
    job_script_prologue: list[str] = setting(default_factory=list,
                                             help="Shell lines run before the worker starts, e.g. ['module load "
                                                  "python/3.11', 'source /shared/svrt/.venv/bin/activate'].")
    python: str | None = setting(None, help="Python of the workers [default: the one running svrt batch; it must "
                                            "exist on the compute nodes].")
    interface: str | None = setting(None, help="Network interface of the scheduler and workers, e.g. 'ib0' "
                                               "[default: the host's default route].")
    local_directory: str | None = setting(None, help="Scratch folder of each worker on its node, e.g. '$TMPDIR'.")
    log_directory: str | None = setting(None, help="Folder of the jobs' stdout/stderr [default: the current folder].")
    dashboard_address: str = setting(":8787", help="Address of the scheduler's dashboard (needs bokeh); ':0' "
                                                   "picks a free port.")

    def __post_init__(self) -> None:
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise SvrtError(msg)

        need(isinstance(self.cores, int) and self.cores >= 1, f"cores must be an integer >= 1; got {self.cores!r}.")
        need(self.processes is None or (isinstance(self.processes, int) and 1 <= self.processes <= self.cores),
             f"processes must be an integer in 1..cores ({self.cores}) or \"none\"; got {self.processes!r}.")
        need(isinstance(self.jobs, int) and self.jobs >= 1, f"jobs must be an integer >= 1; got {self.jobs!r}.")
        need(bool(_MEMORY.match(str(self.memory))),
             f"memory must be a size such as \"8GB\" or \"32GiB\"; got {self.memory!r}.")
        need(bool(_WALLTIME.match(str(self.walltime))),
             f"walltime must be [D-]HH:MM[:SS] such as \"12:00:00\"; got {self.walltime!r}.")


def slurm_cluster(config: ClusterConfig, threads: int = 1, **overrides: Any):
    """A ``dask_jobqueue.SLURMCluster`` for ``config`` (no job submitted yet: ``cluster.scale(jobs=N)``
    does; ``cluster.job_script()`` shows what sbatch gets). ``threads``: torch intra-op threads per
    worker (OMP/MKL/OpenBLAS threads set to match in the job script). ``overrides``: more
    SLURMCluster arguments. Starts the scheduler in this process; close the cluster (or use it as a
    context manager) to cancel its jobs."""
    try:
        from dask_jobqueue import SLURMCluster
    except ImportError:
        raise SvrtError("--cluster slurm needs dask-jobqueue (pip install 'svrt[cluster]' or pip install "
                        "dask-jobqueue).") from None
    threads = int(threads)
    # the workers must not start one OpenMP thread per core each: as svrt's LocalCluster, set them first
    env = [f"export {name}={threads}" for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")]
    kw: dict[str, Any] = dict(
        cores=config.cores,
        processes=config.processes or config.cores,
        memory=config.memory,
        walltime=config.walltime,
        queue=config.queue,
        account=config.account,
        job_extra_directives=list(config.job_extra_directives),
        job_script_prologue=env + list(config.job_script_prologue),
        interface=config.interface,
        local_directory=config.local_directory,
        log_directory=config.log_directory,
        scheduler_options={"dashboard_address": config.dashboard_address},
    )
    if config.python:
        kw["python"] = config.python
    kw.update(overrides)
    return SLURMCluster(**kw)


@contextlib.contextmanager
def open_cluster(kind: str, config_file: str | None = None, threads: int | None = None,
                 say: Callable[[str], Any] = print) -> Iterator[str | None]:
    """The cluster of ``svrt batch --cluster KIND`` for the duration of the batch: yields None for
    ``local`` (the batch starts its own LocalCluster, or runs in this process), or, for ``slurm``, the
    scheduler address of a :func:`slurm_cluster` built from the ``[cluster]`` table of ``config_file``
    (the defaults without a file) with its ``jobs`` submitted; its jobs are cancelled on exit. ``say``
    gets one line saying what was submitted."""
    if kind not in CLUSTER_KINDS:
        raise SvrtError(f"cluster must be one of {', '.join(CLUSTER_KINDS)}; got {kind!r}.")
    if kind == "local":
        yield None
        return
    from svrt.settings import load_settings

    config = load_settings(config_file, "cluster") if config_file else ClusterConfig()
    with slurm_cluster(config, threads or 1) as cluster:
        cluster.scale(jobs=config.jobs)
        workers = config.jobs * (config.processes or config.cores)
        say(f"SLURM: {config.jobs} job(s) of {config.cores} core(s), {config.memory}, {config.walltime} submitted "
            f"({workers} Dask worker(s) as the queue starts them){'' if config_file else '; no --config: defaults'}.")
        yield cluster.scheduler_address


def dashboard_link(client) -> str | None:
    """The URL of the dashboard of ``client``'s scheduler, or None when it has no HTTP server."""
    try:
        link = client.dashboard_link
    except Exception:  # a remote scheduler without an HTTP server has no 'dashboard' service: KeyError
        return None
    return link or None


def _scheduler_has_bokeh(client) -> bool | None:
    """Whether bokeh imports where ``client``'s scheduler runs (None: cannot ask). Without it the
    scheduler still serves its HTTP routes, and /status is a page that only says to install bokeh."""
    try:
        # a lambda travels by value: the scheduler's host need not have svrt installed
        return bool(client.run_on_scheduler(lambda: __import__("importlib.util").util.find_spec("bokeh") is not None))
    except Exception:
        return None


def dashboard_line(client) -> str:
    """One line for the user: where the Dask dashboard is, or why there is none."""
    link = dashboard_link(client)
    has_bokeh = _scheduler_has_bokeh(client)
    if link and has_bokeh is not False:
        return f"Dask dashboard: {link}"
    if has_bokeh is False:
        return ("Dask dashboard: none, bokeh is not installed where the scheduler runs (pip install 'svrt[cluster]' "
                "or pip install bokeh).")
    return "Dask dashboard: none, the scheduler serves no dashboard (start it with bokeh installed)."
