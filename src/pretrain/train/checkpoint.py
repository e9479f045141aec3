"""Resumable checkpoints: atomic writes, a `latest` pointer, rotation that keeps the best.

A checkpoint is `output_dir/checkpoint-<step>/` holding Accelerate's state (model, optimizer,
scheduler, RNG of every process, grad scaler), `trainer_state.json` (step, data position, token
count, guard counters, best eval loss) and the resolved config. It is written into a temporary
directory and renamed into place only when complete; `output_dir/latest` is then replaced
atomically. A crash at any moment therefore leaves `latest` naming a complete checkpoint.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from accelerate import Accelerator

from pretrain.config import ConfigError

STATE_FILE = "trainer_state.json"
LATEST_FILE = "latest"


@dataclass
class TrainerState:
    """Everything besides tensors that a resumed run needs to continue exactly."""

    step: int = 0
    data_position: int = 0
    tokens_seen: int = 0
    skipped_nonfinite: int = 0
    consecutive_nonfinite: int = 0
    skipped_spikes: int = 0
    skipped_overflow: int = 0  # fp16 steps the loss scaler skipped (and halved its scale)
    recent_losses: list[float] = field(default_factory=list)
    best_eval_loss: float | None = None
    best_eval_step: int | None = None
    best_checkpoint: str | None = None
    data_state: dict | None = None  # streaming: every process's stream state and partial block


def save_checkpoint(
    accelerator: Accelerator, output_dir: Path, state: TrainerState, config_yaml: str
) -> Path:
    """Write checkpoint-<step> atomically on every process's behalf; returns its path."""
    final = output_dir / f"checkpoint-{state.step}"
    tmp = output_dir / f".tmp-checkpoint-{state.step}"
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    try:
        accelerator.save_state(str(tmp))  # every process writes its RNG state; main writes the rest
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            (tmp / STATE_FILE).write_text(json.dumps(asdict(state), indent=2))
            (tmp / "resolved_config.yaml").write_text(config_yaml)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)  # `latest` still names the last complete checkpoint
        raise ConfigError(write_failure(err, final, output_dir)) from err
    if accelerator.is_main_process:
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _write_atomic(output_dir / LATEST_FILE, final.name)
    accelerator.wait_for_everyone()
    return final


def write_failure(err: OSError, what: Path, output_dir: Path) -> str:
    """The one-line message for a failed write of `what` (a full disk said plainly)."""
    cause = (
        "the disk is full" if err.errno == errno.ENOSPC else (err.strerror or str(err) or type(err).__name__)
    )
    pointer = output_dir / LATEST_FILE
    latest = f"; {LATEST_FILE} still names {pointer.read_text().strip()}" if pointer.is_file() else ""
    return f"could not write {what} ({cause}); nothing partial was kept{latest}: free space, then resume"


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def resolve_checkpoint(output_dir: Path, spec: str) -> Path:
    """The checkpoint dir named by `spec` ('latest' or a path), checked for completeness."""
    if spec == "latest":
        pointer = output_dir / LATEST_FILE
        if not pointer.is_file():
            raise ConfigError(
                f"train.resume_from_checkpoint=latest but {output_dir} has no checkpoint; "
                "drop the option to start fresh or give a checkpoint path"
            )
        path = output_dir / pointer.read_text().strip()
    else:
        path = Path(spec)
    if not path.is_dir():
        raise ConfigError(f"checkpoint {path} does not exist; give an existing checkpoint-<step> directory")
    if not (path / STATE_FILE).is_file():
        raise ConfigError(
            f"checkpoint {path} is incomplete (no {STATE_FILE}); resume from an earlier checkpoint"
        )
    return path


def load_checkpoint(accelerator: Accelerator, path: Path) -> TrainerState:
    """Restore Accelerate state from `path` and return the trainer state saved with it."""
    try:
        state = TrainerState(**json.loads((path / STATE_FILE).read_text()))
        accelerator.load_state(str(path))
    except Exception as err:  # noqa: BLE001 - torch/safetensors raise many types for damaged files
        raise ConfigError(
            f"checkpoint {path} is corrupt or does not match this model ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:120] if str(err) else ''}); resume from another checkpoint"
        ) from err
    return state


def rotate_checkpoints(
    output_dir: Path, keep: int, best: str | None, also_keep: set[str] = frozenset()
) -> None:
    """Delete all but the `keep` newest checkpoints, never the best one, the one `latest` names, nor
    those in `also_keep` (the full checkpoints that incremental ones are deltas of)."""
    if keep <= 0:
        return
    checkpoints = sorted(
        (p for p in output_dir.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
        key=lambda p: int(p.name.split("-")[-1]),
    )
    latest = (output_dir / LATEST_FILE).read_text().strip() if (output_dir / LATEST_FILE).is_file() else None
    protected = {best, latest, *also_keep}
    for path in checkpoints[:-keep]:
        if path.name not in protected:
            shutil.rmtree(path, ignore_errors=True)
