"""What a resume may change: the run's config against the one its checkpoint was saved with.

A checkpoint's `resolved_config.yaml` fixes everything that shaped the saved tensors and the data
order: model shape, data and seq_len, batch geometry, optimizer and schedule, seed. A resume that
asks for another value of one of those is refused with every difference listed. The keys in
`MUTABLE` steer only how long the run goes, what it logs, evaluates and saves, and where it pushes;
their new values are applied and printed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from pretrain.config import ConfigError, build_config, flatten, to_dict

MUTABLE_PREFIXES = ("train.hub_", "parallel.")  # a sharded checkpoint reshards to a new layout
MUTABLE = {
    "train.output_dir",
    "train.overwrite_output_dir",
    "train.resume_from_checkpoint",
    "train.max_steps",
    "train.max_tokens",
    "train.logging_steps",
    "train.eval_steps",
    "train.eval_max_batches",
    "train.eval_batch_size",
    "train.eval_frequency_buckets",
    "train.save_steps",
    "train.save_total_limit",
    "train.report_to",
    "train.peak_flops",
    "train.max_nonfinite_steps",
    "train.spike_threshold",
    "train.spike_window",
    "train.push_to_hub",
    "train.checkpoint_format",
    "train.async_save",
    "train.incremental_save",
    "train.gradient_checkpointing",
    "train.torch_compile",
    "data.num_proc",
    "data.cache_dir",
}


def is_mutable(key: str) -> bool:
    """Whether a resume may change `key` (it does not touch saved tensors or the data order)."""
    return key in MUTABLE or key.startswith(MUTABLE_PREFIXES)


def compare_resume_config(checkpoint: Path, cfg: Any) -> list[str]:
    """The changed mutable keys as 'key: old -> new'; raises ConfigError listing any changed
    immutable key. A checkpoint without a readable resolved_config.yaml is not compared."""
    saved_file = checkpoint / "resolved_config.yaml"
    try:
        saved = flatten(yaml.safe_load(saved_file.read_text()) or {})
    except (OSError, yaml.YAMLError, AttributeError):
        return []
    check_same_objective(checkpoint, saved, cfg)
    try:  # read it back through the config types, so 1e-08 written as text still equals 1e-08
        saved = flatten(to_dict(build_config(type(cfg), saved)))
    except ConfigError:
        pass  # written by another version: compare the keys both know as they are
    current = flatten(to_dict(cfg))
    changed = {
        key: (saved.get(key), value) for key, value in current.items() if key in saved and saved[key] != value
    }
    refused = [f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items() if not is_mutable(k)]
    if refused:
        raise ConfigError(
            f"cannot resume from {checkpoint} with a changed {'; '.join(refused)}; these shape the saved "
            "model, data order or optimizer: resume with the checkpoint's values (its resolved_config.yaml) "
            "or start a new run in another train.output_dir"
        )
    return [f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items()]


def check_same_objective(checkpoint: Path, saved: dict[str, Any], cfg: Any) -> None:
    """Refuse a checkpoint whose objective section has other keys: another objective trained it (each
    objective's section has its own keys; causal's has none)."""
    theirs = sorted(k.partition(".")[2] for k in saved if k.startswith("objective."))
    ours = sorted(k.partition(".")[2] for k in flatten(to_dict(cfg)) if k.startswith("objective."))
    if theirs != ours:
        raise ConfigError(
            f"cannot resume from {checkpoint}: another objective saved it (its objective keys {theirs or 'none'}, "
            f"this objective's {ours or 'none'}); resume it with the objective that trained it, or start a new "
            "run in another train.output_dir"
        )
