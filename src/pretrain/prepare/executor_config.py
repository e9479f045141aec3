"""The `executor` config section of `pretrain data prepare`: where and how wide the stages run."""

from __future__ import annotations

from dataclasses import dataclass

EXECUTORS = ("local", "slurm", "ray", "datasets")


@dataclass(frozen=True)
class ExecutorConfig:
    name: str = "local"
    """Where the stages run: local (datatrove process pool), slurm (sbatch job arrays), ray (a Ray
    cluster: RAY_ADDRESS, else a local one on 127.0.0.1), datasets (one machine, `datasets.map`)."""
    tasks: int = 1
    """datatrove tasks; input files are split over them whole, so give at least as many files. Range [1, inf)."""
    workers: int = 1
    """Tasks running at once (local processes, Slurm array throttle, Ray tasks); 0 = all of them. Range [0, inf)."""
    logging_dir: str = ""
    """datatrove logs, completion markers and intermediates; empty = OUTPUT/logs. Same dir = resume."""
    partition: str = ""
    """Slurm partition (needed by --executor slurm)."""
    time: str = "24:00:00"
    """Slurm time limit per array task (HH:MM:SS)."""
    cpus_per_task: int = 1
    """CPUs reserved per task (Slurm and Ray). Range [1, inf)."""
    mem_per_cpu_gb: float = 2.0
    """Memory reserved per CPU, in GB (Slurm and Ray). Range (0, inf)."""

    def __post_init__(self) -> None:
        if self.name not in EXECUTORS:
            raise ValueError(f"unknown executor {self.name!r}; use one of {list(EXECUTORS)}")
        if self.tasks < 1 or self.workers < 0 or self.cpus_per_task < 1 or self.mem_per_cpu_gb <= 0:
            raise ValueError(
                "executor: tasks and cpus_per_task must be >= 1, workers >= 0, mem_per_cpu_gb > 0"
            )
