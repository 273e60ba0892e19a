"""Hydra's submitit launchers, with a sweep a user can follow and jobs that cannot start reported.

`hydra/launcher=local` and `hydra/launcher=slurm` (conf/hydra/launcher/) use these subclasses of
hydra-submitit-launcher's launchers. They submit the same way and then, instead of waiting silently:

- print a line whenever the sweep's state changes (runs done, running, pending; where the logs are);
- end with one `error:` line (exit status 2) naming each run that failed and its own error line;
- on Slurm, stop with one clear message when a job can never start (a request larger than the
  partition: `PartitionConfig`, `PartitionTimeLimit`, ...), cancelling the sweep's jobs, and when
  `sbatch` refuses the jobs at submission (a cluster that enforces its partition limits). The
  message says which launcher keys to fit: cpus_per_task, mem_gb, gpus_per_node, timeout_min, partition.
"""
from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, filter_overrides
from hydra_plugins.hydra_submitit_launcher import submitit_launcher as base
from omegaconf import OmegaConf

log = logging.getLogger(__name__)

# squeue reasons of a pending job that waiting does not cure.
NEVER_STARTS = ("PartitionConfig", "PartitionNodeLimit", "PartitionTimeLimit", "ReqNodeNotAvail", "BadConstraints",
                "InvalidAccount", "InvalidQOS", "QOSMaxCpuPerJobLimit", "QOSMaxMemoryPerJob", "QOSMaxGRESPerJob",
                "AssocMaxCpuPerJobLimit", "AssocMaxMemPerJob", "PartitionDown", "PartitionInactive", "JobHeldAdmin")
FIT_KEYS = ("hydra.launcher.cpus_per_task", "hydra.launcher.mem_gb", "hydra.launcher.gpus_per_node",
            "hydra.launcher.timeout_min", "hydra.launcher.partition")
POLL_S = 2.0


def _fix_hint() -> str:
    return (f"fit {', '.join(FIT_KEYS)} to the cluster (what it offers: `sinfo -o \"%P %c %m %G %l\"`)")


class _Following:

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import submitit

        params = dict(self.params)
        init = {"folder": params.pop("submitit_folder")}
        if "max_num_timeout" in params:
            init[f"{self._EXECUTOR}_max_num_timeout"] = params.pop("max_num_timeout")
        executor = submitit.AutoExecutor(cluster=self._EXECUTOR, **init)
        shared = set(OmegaConf.structured(base.BaseQueueConf).keys())
        executor.update_parameters(**{k if k in shared else f"{self._EXECUTOR}_{k}": v for k, v in params.items()})

        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        log.info(f"Submitit '{self._EXECUTOR}' sweep output dir : {sweep_dir}")
        job_params = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            job_params.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state()))
        try:
            jobs = executor.map_array(self, *zip(*job_params))
        except Exception as error:  # noqa: BLE001  (submitit raises sbatch's refusal in several forms)
            if self._EXECUTOR != "slurm":
                raise
            reason = next((line for line in str(error).splitlines() if "error" in line.lower()), str(error))
            _stop(f"Slurm refused the sweep's jobs at submission ({reason.strip()}); {_fix_hint()}")
        folder = Path(str(init["folder"]).replace("%j", "<job id>"))
        self.follow(jobs, folder)
        return self.collect(jobs, job_overrides, initial_job_idx, folder)

    @staticmethod
    def collect(jobs, job_overrides, initial_job_idx: int, folder: Path) -> list[JobReturn]:
        """The runs' results; a run that failed (a bad value, a crash) is one line naming it and its error,
        not submitit's traceback around the job's whole stderr."""
        from submitit.core.utils import FailedJobError, UncompletedJobError

        results, failed = [], []
        for idx, (job, overrides) in enumerate(zip(jobs, job_overrides), start=initial_job_idx):
            try:
                results.append(job.results()[0])
            except (FailedJobError, UncompletedJobError):
                failed.append(f"run #{idx} ({' '.join(filter_overrides(overrides))}): {_last_error(job)}")
        if failed:
            _stop(f"{len(failed)} of {len(jobs)} runs failed: {'; '.join(failed)} (job logs: {folder})")
        return results

    def follow(self, jobs, folder: Path) -> None:
        shown, last_print = None, 0.0
        while True:
            states = [job.state for job in jobs]
            done = sum(job.done() for job in jobs)
            running = sum(s == "RUNNING" for s in states)
            line = f"sweep: {done}/{len(jobs)} runs done, {running} running, {len(jobs) - done - running} waiting"
            if line != shown or time.time() - last_print > 300:
                print(f"{line} (job logs: {folder})", flush=True)
                shown, last_print = line, time.time()
            if done == len(jobs):
                return
            self.check_startable(jobs)
            time.sleep(POLL_S)

    def check_startable(self, jobs) -> None:
        pass


def _last_error(job) -> str:
    """A failed job's own `error:` line (train.py's one line for bad input), else its last stderr line."""
    lines = [line.strip() for line in (job.stderr() or "").splitlines() if line.strip()]
    mine = [line for line in lines if line.startswith("error: ")]
    if mine:
        return mine[-1][len("error: "):]
    return lines[-1] if lines else f"no output (state {job.state})"


def _stop(message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


class LocalLauncher(_Following, base.LocalLauncher):
    """hydra/launcher=local: the runs as local processes, with progress lines."""


class SlurmLauncher(_Following, base.SlurmLauncher):
    """hydra/launcher=slurm: Slurm array jobs, with progress lines and a stop for jobs that cannot start."""

    def check_startable(self, jobs) -> None:
        pending = [job for job in jobs if job.state == "PENDING"]
        if not pending:
            return
        ids = ",".join(str(job.job_id) for job in pending)
        result = subprocess.run(["squeue", "-h", "-j", ids, "-o", "%i %r"], capture_output=True, text=True)
        stuck = [line.split(None, 1) for line in result.stdout.splitlines() if line.split(None, 1)[-1] in NEVER_STARTS]
        if stuck:
            job_id, reason = stuck[0]
            for job in jobs:
                job.cancel(check=False)
            _stop(f"Slurm job {job_id} can never start (pending, reason {reason}: it asks for more than the "
                  f"partition offers); the sweep's jobs are cancelled; {_fix_hint()}")
