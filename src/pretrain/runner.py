"""The shared runner: config -> data -> tokenizer -> objective -> model -> Trainer -> final eval/save.

Recipes call `main(Objective, argv, default_config)`; nothing here branches on which objective it
is. Every expected failure (bad config, bad data, guard stop) ends as one `error:` line on stderr
and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import datasets
import yaml
from accelerate import Accelerator, InitProcessGroupKwargs
from accelerate.utils import set_seed

from pretrain.config import ConfigError, parse_config, render_help, to_dict
from pretrain.data.mixture import SourceSets, load_mixture, tokenizer_data
from pretrain.data.outputs import check_output, claim_output_dir, remove_unused_output_dir
from pretrain.data.shard_set import ShardSet, load_run_datasets, shard_tokenizer_name
from pretrain.data.text import DataError, cache_root
from pretrain.data.tokenizer import build_tokenizer, set_post_processor
from pretrain.eval.frequency import build_token_buckets, plot_loss_by_frequency
from pretrain.eval.harness import compression_baselines, evaluate
from pretrain.hub.push import HubError, check_hub_access, push_checkpoint, push_output
from pretrain.objectives.base import Objective
from pretrain.prepare.sources import source_shards
from pretrain.settings import make_run_config
from pretrain.train.checkpoint import save_into_place, write_failure
from pretrain.train.monitoring import plot_curves
from pretrain.train.plan import check_parallel_family, check_parallel_launch
from pretrain.train.trainer import Trainer, TrainingStopped

FINAL_MODEL_FILES = ("config.json", "model.safetensors")
TRAIN_OUTPUT_FILES = ("resolved_config.yaml", "metrics.jsonl")  # train outputs from before the marker


def build_accelerator(cfg: Any) -> Accelerator:
    """An Accelerator for this run; CPU process groups need gloo (NCCL is GPU-only), and naming a
    backend without a distributed launch breaks Accelerate, so only multi-process CPU runs get it."""
    import torch

    if not torch.accelerator.is_available():  # what DeepSpeed would pick anyway, minus its warning
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    multi_process = int(os.environ.get("WORLD_SIZE", "1")) > 1
    handlers = (
        [InitProcessGroupKwargs(backend="gloo")] if multi_process and not torch.cuda.is_available() else []
    )
    return Accelerator(
        mixed_precision=cfg.train.mixed_precision,
        log_with=list(cfg.train.report_to) or None,
        project_dir=cfg.train.output_dir,
        kwargs_handlers=handlers,
        # Our schedule counts optimizer steps; by default Accelerate steps it once per process.
        step_scheduler_with_optimizer=False,
    )


def check_launch(accelerator: Accelerator) -> None:
    """Refuse a launch that asked for several processes but got a single-process Accelerator.

    `accelerate launch --cpu --num_processes N` runs ONE process through its simple launcher, which
    still exports MASTER_ADDR (only when N > 1) but no WORLD_SIZE; PRETRAIN_EXPECTED_PROCESSES
    states the expectation explicitly (schedulers, tests).
    """
    expected = os.environ.get("PRETRAIN_EXPECTED_PROCESSES")
    simple_multi = "MASTER_ADDR" in os.environ and "WORLD_SIZE" not in os.environ
    requested = int(expected) if expected else (2 if simple_multi else 1)
    if requested > 1 and accelerator.num_processes == 1:
        raise ConfigError(
            "several processes were requested but this is a single-process run (accelerate launch --cpu "
            "--num_processes N starts one process); on CPU use ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu "
            "--num_processes N"
        )


def prepare_output_dir(cfg: Any) -> Path:
    """Create and mark output_dir; refuse one that overlaps an input, is not a train output, or holds a
    finished model (unless overwriting or resuming)."""
    out = Path(cfg.train.output_dir)
    inputs = (
        cfg.data.train_file,
        cfg.data.validation_file,
        cfg.model.model_name_or_path,
        cfg.model.tokenizer_name,
        *(source.path for source in (*cfg.data.sources, *cfg.data.validation_sources)),
    )
    check_output(out, inputs, "train.output_dir")
    finished = all((out / f).is_file() for f in FINAL_MODEL_FILES)
    if finished and not cfg.train.overwrite_output_dir and not cfg.train.resume_from_checkpoint:
        raise ConfigError(
            f"train.output_dir={out} already holds a finished model; pass --train.overwrite_output_dir=true "
            "or choose another directory"
        )
    try:
        claim_output_dir(out, "train", inputs, legacy=TRAIN_OUTPUT_FILES, what="train.output_dir")
        tempfile.TemporaryFile(dir=out).close()
    except OSError as err:
        raise ConfigError(
            f"train.output_dir={out} is not writable ({err.strerror}); choose a writable directory"
        ) from err
    return out


def build_tokenizer_for(
    objective_cls: type[Objective], cfg: Any, train_raw: datasets.Dataset, accelerator: Accelerator
):
    name = cfg.model.tokenizer_name or cfg.model.model_name_or_path
    if isinstance(train_raw, ShardSet):
        name = name or shard_tokenizer_name(train_raw)
    with accelerator.main_process_first():
        tokenizer = build_tokenizer(
            name,
            train_raw,
            cfg.model.vocab_size,
            cache_root(cfg.data),
            objective_cls.extra_special_tokens(cfg),
        )
    if not cfg.model.tokenizer_name and not cfg.model.model_name_or_path:
        set_post_processor(tokenizer, objective_cls.post_processor)
    return tokenizer


def check_model_fits(model: Any, tokenizer: Any, block_len: int) -> None:
    """Tokenizer ids must index the embedding, and a block must fit the model's positions."""
    embeddings = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > embeddings:
        raise ConfigError(
            f"the tokenizer has {len(tokenizer)} tokens but the model's embedding has {embeddings} rows; "
            "use the model's own tokenizer or a matching model.vocab_size"
        )
    limit = getattr(model.config, "max_position_embeddings", None) or getattr(
        model.config, "n_positions", None
    )
    if limit and model.config.model_type in ("roberta", "xlm-roberta", "camembert"):
        limit -= model.config.pad_token_id + 1  # RoBERTa positions start after the padding index
    # XLNet has relative positions and reports max_position_embeddings = -1 (no limit).
    if limit and limit > 0 and block_len > limit:
        raise ConfigError(
            f"data.seq_len gives {block_len}-token blocks but the model has {limit} positions; lower data.seq_len"
        )


def build_components(objective_cls: type[Objective], cfg: Any, accelerator: Accelerator) -> tuple:
    """(objective, model, train_data, eval_data, valid_raw) of a run: data, tokenizer, objective and
    model built one way for training, benchmarks and tests."""
    if cfg.data.sources:
        train_raw, valid_raw, tokenizer = load_sources(objective_cls, cfg, accelerator)
    else:
        train_raw, valid_raw = load_run_datasets(cfg.data)
        tokenizer = build_tokenizer_for(objective_cls, cfg, train_raw, accelerator)
    sets = [s for raw in (train_raw, valid_raw) for s in (raw.sets if isinstance(raw, SourceSets) else [raw])]
    for shards in {s.path: s for s in sets if isinstance(s, ShardSet)}.values():
        shards.check_tokenizer(tokenizer, cfg.data.special_tokens_in_text)
    objective = objective_cls(cfg, tokenizer)
    train_data = objective.build_dataset(train_raw, accelerator)
    eval_data = objective.build_dataset(valid_raw, accelerator)
    model = objective.build_model()
    check_model_fits(model, objective.tokenizer, objective.block_len())
    return objective, model, train_data, eval_data, valid_raw


def load_sources(objective_cls: type[Objective], cfg: Any, accelerator: Accelerator) -> tuple:
    """(train, validation, tokenizer) of a data.sources mixture; raw sources are tokenized into cached
    shards with the run's tokenizer first (main process first, the others then reuse them)."""
    tokenizer = build_tokenizer_for(objective_cls, cfg, tokenizer_data(cfg.data), accelerator)

    def shard_path(source: Any) -> str:
        with accelerator.main_process_first():
            return source_shards(source, tokenizer, cfg.data, progress=accelerator.is_local_main_process)

    return (*load_mixture(cfg.data, shard_path), tokenizer)


def train(objective_cls: type[Objective], cfg: Any) -> dict[str, float]:
    """Run one training job end to end; returns the final evaluation metrics."""
    accelerator = build_accelerator(cfg)
    check_launch(accelerator)
    check_parallel_launch(cfg.parallel, accelerator)
    check_parallel_family(cfg.parallel, cfg.model, cfg.data.document_mask, objective_cls)
    if not cfg.model.model_name_or_path and cfg.model.family not in objective_cls.families:  # before any data
        raise ConfigError(
            f"model.family={cfg.model.family!r} cannot train objective {objective_cls.name}; "
            f"use one of {objective_cls.families}"
        )
    if cfg.train.push_to_hub:
        check_hub_access(cfg.train, contact_endpoint=accelerator.is_main_process)
    set_seed(cfg.train.seed)
    out = prepare_output_dir(cfg) if accelerator.is_main_process else Path(cfg.train.output_dir)
    config_yaml = yaml.safe_dump(to_dict(cfg), sort_keys=False)
    if not accelerator.is_local_main_process:
        datasets.disable_progress_bars()
    objective, model, train_data, eval_data, valid_raw = build_components(objective_cls, cfg, accelerator)
    accelerator.print(
        f"objective={objective.name} world_size={accelerator.num_processes} params={sum(p.numel() for p in model.parameters()) / 1e6:.2f}M "
        f"train_sequences={len(train_data) if hasattr(train_data, '__len__') else 'streamed'} "
        f"eval_sequences={len(eval_data)} "
        f"packing_efficiency={getattr(train_data, 'efficiency', 1.0):.4f}"
    )
    counted = objective.language_model and hasattr(
        train_data, "token_arrays"
    )  # a stream is not counted ahead
    frequency = build_frequency_buckets(cfg, objective, train_data, accelerator) if counted else None
    trainer = Trainer(
        cfg,
        objective,
        model,
        train_data,
        eval_data,
        accelerator,
        config_yaml,
        flops_per_token(model, objective),
        after_save=push_checkpoint,
        frequency=frequency,
    )
    if cfg.train.report_to:
        # wandb writes under output_dir (offline runs: output_dir/wandb/offline-run-*), not the cwd.
        init_kwargs = {"wandb": {"dir": str(out)}} if "wandb" in cfg.train.report_to else {}
        accelerator.init_trackers(objective.name, config=flat_config(cfg), init_kwargs=init_kwargs)
    trainer.maybe_resume()
    if accelerator.is_main_process:  # only now: every check has passed
        (out / "resolved_config.yaml").write_text(config_yaml)
    state = trainer.train()
    save_final_model(objective, trainer, accelerator, out)
    batch_size = cfg.train.eval_batch_size or cfg.train.micro_batch_size
    results = evaluate(
        objective, trainer.model, eval_data, trainer.plan.data_view, batch_size, frequency=frequency
    )
    for name, part in getattr(eval_data, "parts", ()):  # a mixture: the loss on each validation source
        by_source = evaluate(objective, trainer.model, part, trainer.plan.data_view, batch_size)
        results.setdefault("eval_loss_by_source", {})[name] = by_source["eval_loss"]
    results.update(
        objective=objective.name,
        world_size=accelerator.num_processes,
        num_parameters=count_parameters(model),  # non-embedding N (Kaplan et al. 2020), for scaling fits
        total_parameters=sum(p.numel() for p in model.parameters()),
        tokens_seen=state.tokens_seen,
        steps=state.step,
    )
    if trainer.downstream:  # the in-loop evaluation after the last step (train.downstream_tasks)
        results["downstream"] = trainer.downstream.last
    if objective.language_model and isinstance(
        valid_raw, datasets.Dataset
    ):  # shards hold no text to compress
        results.update(compression_baselines("\n\n".join(valid_raw["text"]).encode("utf-8")))
    if accelerator.is_main_process:
        (out / "eval_results.json").write_text(json.dumps(results, indent=2))
        plot_curves(out / "metrics.jsonl", out / "eval_history.jsonl", out / "loss_curve.png", results)
        plot_loss_by_frequency(out / "eval_history.jsonl", results, out / "loss_by_frequency.png")
        print_summary(results)
    accelerator.end_training()
    if cfg.train.push_to_hub and accelerator.is_main_process:
        push_output(cfg.train, out)
    return results


def build_frequency_buckets(cfg: Any, objective: Objective, train_data: Any, accelerator: Accelerator):
    """Frequency buckets from the training token counts (main process first: it writes their cache)."""
    with accelerator.main_process_first():
        return build_token_buckets(
            cfg.train.eval_frequency_buckets, train_data, len(objective.tokenizer), objective.token_bytes
        )


def save_final_model(objective: Objective, trainer: Trainer, accelerator: Accelerator, out: Path) -> None:
    """The final model in Hugging Face format at the root of output_dir (gathered under ZeRO-3/FSDP/TP)."""
    module, state_dict = trainer.plan.gather_state_dict(trainer.model)
    if accelerator.is_main_process:
        try:  # into a temp dir first: a full disk leaves no half-written model and the old one whole
            save_into_place(out, lambda tmp: objective.save_model(module, tmp, state_dict=state_dict))
        except OSError as err:
            raise ConfigError(write_failure(err, out / "model.safetensors", out)) from err
    accelerator.wait_for_everyone()


def count_parameters(model: Any) -> int:
    from pretrain.scaling.flops import count_params

    return count_params(model.config)


def flops_per_token(model: Any, objective: Objective) -> float:
    from pretrain.scaling.flops import training_flops_per_token

    return training_flops_per_token(model.config, objective.block_len())


def flat_config(cfg: Any) -> dict[str, Any]:
    flat = {}
    for section, values in to_dict(cfg).items():
        for key, value in values.items():
            flat[f"{section}.{key}"] = ",".join(map(str, value)) if isinstance(value, list) else value
    return flat


def print_summary(results: dict[str, float]) -> None:
    shown = {k: v for k, v in results.items() if isinstance(v, float)}
    if "bits_per_byte" in shown and "bz2_bits_per_byte" in shown:
        print(
            f"validation bits per byte: model {shown['bits_per_byte']:.4f} vs bz2 {shown['bz2_bits_per_byte']:.4f}"
        )
    print("final evaluation: " + "  ".join(f"{k}={v:.4f}" for k, v in shown.items()))


def main(
    objective_cls: type[Objective], argv: list[str] | None = None, default_config: str | Path | None = None
) -> int:
    """Recipe entry point: parse argv into the objective's config and train; 0 on success."""
    argv = sys.argv[1:] if argv is None else argv
    wants_help = any(a in ("-h", "--help") for a in argv)
    created = None  # the output_dir this run creates, removed again if the run fails before using it
    try:
        cfg = parse_config(
            make_run_config(objective_cls.Config),
            [a for a in argv if a not in ("-h", "--help")],
            default_config,
        )
        if wants_help:  # the keys with this run's values (defaults < recipe YAML < given overrides)
            print(f"usage: [CONFIG.yaml] [--section.key=value ...]  (objective {objective_cls.name})\n")
            print(render_help(cfg))
            return 0
        created = None if os.path.lexists(cfg.train.output_dir) else cfg.train.output_dir
        train(objective_cls, cfg)
    except (ConfigError, DataError, TrainingStopped, HubError) as err:
        print(f"error: {err}", file=sys.stderr)
        if created:
            remove_unused_output_dir(created)
        return 1
    return 0


def cli_main(argv: list[str]) -> int:
    """`pretrain train OBJECTIVE [CONFIG.yaml] [--k=v ...]`: the recipes' entry point by objective name."""
    from pretrain.objectives import OBJECTIVES, get_objective

    if not argv or argv[0].startswith("-"):
        wants_help = bool(argv) and argv[0] in ("-h", "--help")
        print(
            "usage: pretrain train OBJECTIVE [CONFIG.yaml] [--section.key=value ...]\n"
            f"objectives: {', '.join(OBJECTIVES)}\n"
            "`pretrain train OBJECTIVE --help` lists every config key with its type, default and meaning",
            file=sys.stdout if wants_help else sys.stderr,
        )
        return 0 if wants_help else 2
    try:
        objective_cls = get_objective(argv[0])
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    default = Path(__file__).resolve().parents[2] / "recipes" / argv[0] / "config.yaml"
    return main(objective_cls, argv[1:], default if default.is_file() else None)
