"""The executor stages of one run: the configured stages cut at each dedup (see executors.py)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pretrain.prepare.shard_io import (
    InputShardReader,
    ReportStep,
    SegmentReader,
    output_writer,
    segment_writer,
)
from pretrain.prepare.steps import (
    RULES,
    DocumentStage,
    ExactFilterStep,
    ExactHashStep,
    MinhashBucketStep,
    MinhashClusterStep,
    MinhashSignatureStep,
    NearFilterStep,
)

if TYPE_CHECKING:
    from pretrain.prepare.pipeline import DataPipeConfig


def plan_stages(
    files: list[str], sources: list[str], output: Path, work: Path, cfg: DataPipeConfig
) -> list[tuple[str, list[Any], int]]:
    """(name, datatrove steps, tasks) of each executor stage, in the order they must run."""
    p, tasks, work_dir = cfg.pipeline, cfg.executor.tasks, str(work)
    examples = {"per_reason": p.examples_per_reason, "chars": p.example_chars}
    lines = cfg.exact_dedup.lines
    plan: list[tuple[str, list[Any], int]] = []
    steps: list[Any] = [InputShardReader(files, cfg.input)]

    def cut(step: Any) -> list[Any]:
        """End the current segment with `step` and its shards; returns the reader of the next one."""
        folder = str(work / f"segment-{len(plan)}")
        plan.append((f"segment-{len(plan)}", [*steps, step, segment_writer(folder)], tasks))
        return [SegmentReader(folder)]

    for stage in p.stages:
        if stage in RULES:
            steps.append(DocumentStage(stage, getattr(cfg, stage), work_dir, **examples))
        elif stage == "exact_dedup":
            steps = [*cut(ExactHashStep(work_dir, lines)), ExactFilterStep(work_dir, lines, **examples)]
        else:
            reader = cut(MinhashSignatureStep(work_dir, cfg.near_dedup, p.batch_size))
            bands = cfg.near_dedup.band_shape()[0]
            plan.append(("near_dedup-buckets", [MinhashBucketStep(work_dir, bands)], min(tasks, bands)))
            plan.append(("near_dedup-clusters", [MinhashClusterStep(work_dir)], 1))
            steps = [*reader, NearFilterStep(work_dir, **examples)]
    plan.append((f"segment-{len(plan)}", [*steps, output_writer(str(output))], tasks))
    plan.append(("report", [ReportStep(sources, str(output), work_dir, cfg)], 1))
    return plan
