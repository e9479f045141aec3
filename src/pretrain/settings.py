"""The config sections every recipe shares: `model`, `data`, `train`. Objectives add `objective`.

Field comments give the unit. Names follow transformers where it has one (learning_rate,
warmup_steps, max_steps, gradient_accumulation_steps, max_grad_norm, output_dir, push_to_hub).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Literal

from pretrain.config import ConfigError


def expand_user(section: Any, names: tuple[str, ...]) -> None:
    """Expand a leading `~` in these path fields: nothing expands it after `--key=` or in YAML, and a
    literal `~` directory in the working directory is never what was meant."""
    for name in names:
        value = getattr(section, name)
        if value.startswith("~"):
            object.__setattr__(section, name, os.path.expanduser(value))  # frozen: set once, while built


@dataclass(frozen=True)
class ModelConfig:
    family: Literal["gpt2", "llama", "olmo2", "qwen3", "bert", "roberta", "t5", "xlnet"] = "gpt2"
    """Architecture family; objectives accept the families they can train (olmo2 and qwen3: QK-norm decoders)."""
    preset: str = "tiny"
    """Size preset from pretrain.objectives.models.PRESETS (tiny, small, 125m, 350m, 760m, 1b; llama:
    llama3-1b, llama3-3b, llama3-8b, Llama 3 shapes with grouped-query attention)."""
    model_name_or_path: str = ""
    """Start from these pretrained weights (local dir or Hub id) instead of a fresh config."""
    tokenizer_name: str = ""
    """Use this tokenizer (local dir or Hub id); empty = train a byte-level BPE on the training data."""
    vocab_size: int = 8192
    """Vocabulary size (tokens) of the trained BPE tokenizer; ignored with tokenizer_name. Range [1, inf)."""
    hidden_size: int = 0
    """Override the preset's hidden width (0 = preset). Range [0, inf)."""
    num_layers: int = 0
    """Override the preset's number of layers (0 = preset). Range [0, inf)."""
    num_heads: int = 0
    """Override the preset's attention heads (0 = preset). Range [0, inf)."""
    dropout: float = 0.0
    """Dropout probability on attention, residual and embeddings (pretraining usually uses 0). Range [0, 1)."""
    max_position_embeddings: int = 0
    """Positions the model supports (tokens); 0 = data.seq_len. Range [0, inf)."""
    tie_word_embeddings: bool = True
    """Decoders: share the input embedding with the output head (GPT-2); false = a separate head matrix."""
    num_kv_heads: int = 0
    """Key/value heads (llama grouped-query attention; divides the heads); 0 = the preset's (= heads). Range [0, inf)."""
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2", "flex_attention"] = "sdpa"
    """Decoder attention kernel (causal, prefix_lm). Packed documents: sdpa takes a dense (b, 1, t, t) mask
    (the CPU path); flash_attention_2 (varlen) and flex_attention take only per-document position_ids.
    eager is refused with packed or prefix masks (it adds boolean masks as numbers)."""
    loss_kernel: Literal["auto", "chunked", "liger", "stock"] = "auto"
    """Decoder LM loss: 'chunked' never builds the micro-batch's fp32 logits; 'liger' is liger-kernel's fused
    linear cross-entropy (CUDA, extra `gpu`); 'auto' = liger on CUDA when installed, else chunked;
    'stock' = the full logits (pretrain.objectives.head_loss)."""
    loss_chunk_tokens: int = 1024
    """Tokens per logits chunk of the chunked loss (one (chunk, vocab) fp32 block alive at a time). Range [1, 1048576]."""

    def __post_init__(self) -> None:
        if self.num_kv_heads < 0:
            raise ConfigError(f"model.num_kv_heads must be >= 0, got {self.num_kv_heads}")
        if not 1 <= self.loss_chunk_tokens <= 2**20:
            raise ConfigError(f"model.loss_chunk_tokens must be in 1..1048576, got {self.loss_chunk_tokens}")


@dataclass(frozen=True)
class SourceConfig:
    """One source of a data mixture (an item of data.sources / data.validation_sources)."""

    path: str = ""
    """A shard directory (`pretrain data tokenize` output, or bare .bin/.idx) or a raw input (tokenized
    and cached on first use)."""
    weight: float = 1.0
    """Share of training blocks drawn from this source, relative to the others' weights (> 0). Range (0, inf)."""
    name: str = ""
    """Name in tokens_seen_by_source and eval_loss_by_source; empty = the path's file or folder name."""

    def label(self) -> str:
        """The source's name: `name`, else the last part of its path (without a .bin/.idx suffix)."""
        from pathlib import PurePath

        stem = PurePath(self.path.rstrip("/")).name
        return self.name or stem.removesuffix(".bin").removesuffix(".idx").removesuffix(".jsonl") or self.path


@dataclass(frozen=True)
class DataConfig:
    train_file: str = ""
    """Local .txt/.jsonl/.json/.parquet file, or a `save_to_disk` dataset dir; empty = embedded corpus."""
    validation_file: str = ""
    """Local validation file/dir; empty = a split of the training data of size validation_fraction."""
    dataset_name: str = ""
    """Hub dataset id (used when train_file is empty), e.g. 'wikitext'."""
    dataset_config_name: str = ""
    """Hub dataset config, e.g. 'wikitext-103-raw-v1'."""
    streaming: bool = False
    """Stream the training data (train_file or the Hub dataset) through datasets' IterableDataset, tokenized
    and packed on the fly; checkpoints hold the stream's position. Needs model.tokenizer_name."""
    sources: tuple[SourceConfig, ...] = ()
    """A training mixture: a list of {path, weight, name}; blocks are drawn by weight (replaces train_file)."""
    validation_sources: tuple[SourceConfig, ...] = ()
    """Validation sets by source, {path, name} (weight unused); empty = a held-out tail of each source."""
    mixture_repeat: bool = True
    """A source smaller than its share repeats (its epochs are counted); false = stop with an error instead."""
    text_column: str = "text"
    """Column that holds the raw text."""
    validation_fraction: float = 0.05
    """Fraction of documents held out for validation when no validation set is given. Range [0, 1)."""
    seq_len: int = 256
    """Tokens per packed training sequence. Range [2, inf)."""
    document_mask: bool = False
    """Packed sequences: restart positions at each document and forbid attention across documents."""
    special_tokens_in_text: Literal["parse", "plain"] = "parse"
    """A special-token string written in the text ("</s>", wikitext's "<unk>"): 'parse' makes it that token
    (what `tokenizers` and run_clm do); 'plain' tokenizes it as ordinary text (nanoGPT's encode_ordinary),
    so a literal "</s>" in web or code data cannot end a document. Memorization and compression follow it."""
    num_proc: int = 1
    """Worker processes for tokenization (more than the core count only adds overhead). Range [1, inf)."""
    max_train_documents: int = 0
    """Use at most this many training documents (0 = all); for quick experiments. Range [0, inf)."""
    cache_dir: str = ""
    """Where tokenized/packed datasets and the embedded corpus are cached; empty = ~/.cache/pretrain."""

    def __post_init__(self) -> None:
        expand_user(self, ("train_file", "validation_file", "cache_dir"))
        if self.train_file and os.path.realpath(self.train_file) == os.path.realpath(self.validation_file):
            raise ConfigError(
                "data.validation_file is data.train_file: the eval loss would score text the model trained on; "
                "give a held-out file, or leave validation_file empty to hold out data.validation_fraction"
            )
        for key in ("sources", "validation_sources"):
            sources = getattr(self, key)
            for i, source in enumerate(sources):
                if not source.path:
                    raise ConfigError(f"data.{key}[{i}] has no path; give each source a path: DIR or FILE")
                if not (source.weight > 0 and source.weight < float("inf")):
                    raise ConfigError(
                        f"data.{key}[{i}] ({source.label()}) has weight {source.weight}; weights must be "
                        "finite and > 0 (drop a source instead of giving it weight 0)"
                    )
            names = [s.label() for s in sources]
            if len(set(names)) != len(names):
                raise ConfigError(f"data.{key} names {names} repeat; give each source a distinct name")
        if self.sources and (self.train_file or self.dataset_name):
            raise ConfigError("data.sources replaces data.train_file/dataset_name; give one or the other")
        if self.sources and self.validation_file:
            raise ConfigError(
                "with data.sources, give validation sets as data.validation_sources, not validation_file"
            )
        if self.validation_sources and not self.sources:
            raise ConfigError(
                "data.validation_sources needs data.sources; use data.validation_file otherwise"
            )


@dataclass(frozen=True)
class TrainConfig:
    output_dir: str = "runs/default"
    """Directory for the final model, metrics.jsonl, eval_results.json and checkpoints."""
    overwrite_output_dir: bool = False
    """Allow writing into an output_dir that already holds a finished model."""
    seed: int = 42
    """Seed for model init, data order and masking. Range [0, 4294967295]."""
    max_steps: int = 300
    """Optimizer steps to train (one step = gradient_accumulation_steps micro-steps on every rank). Range [1, inf)."""
    max_tokens: int = 0
    """Token budget; when > 0 it sets max_steps = ceil(max_tokens / tokens per step). Range [0, inf)."""
    micro_batch_size: int = 8
    """Sequences per forward/backward on each process. Range [1, inf)."""
    gradient_accumulation_steps: int = 1
    """Micro-steps per optimizer step. Range [1, inf)."""
    learning_rate: float = 1e-3
    """Peak learning rate. Range (0, inf)."""
    min_lr_ratio: float = 0.1
    """Final learning rate as a fraction of the peak (cosine/linear/wsd). Range [0, 1]."""
    weight_decay: float = 0.1
    """AdamW weight decay, applied to matrices only (not biases, norms or embeddings). Range [0, inf)."""
    adam_beta1: float = 0.9
    """AdamW beta1. Range [0, 1)."""
    adam_beta2: float = 0.95
    """AdamW beta2. Range [0, 1)."""
    adam_epsilon: float = 1e-8
    """AdamW epsilon. Range (0, 1]."""
    optimizer: Literal["adamw", "muon"] = "adamw"
    """'muon': torch.optim.Muon (Jordan et al. 2024) on the blocks' matrices, AdamW on embeddings, head,
    norms and biases; its update is scaled to AdamW's RMS (Liu et al. 2025) so learning_rate carries over."""
    muon_momentum: float = 0.95
    """Muon's Nesterov momentum (0.95 in Jordan et al. 2024). Range [0, 1]."""
    z_loss_weight: float = 0.0
    """Weight of the z-loss, weight x logsumexp(logits)^2 per target (PaLM, Chowdhery et al. 2022: 1e-4);
    language-model objectives; logged as z_loss (nats per target). Range [0, 1]."""
    lr_scheduler_type: Literal["cosine", "linear", "constant", "wsd"] = "cosine"
    """Schedule after warmup; wsd = warmup-stable-decay."""
    warmup_steps: int = 30
    """Linear warmup length (optimizer steps). Range [0, inf)."""
    decay_fraction: float = 0.2
    """wsd only: fraction of max_steps spent in the final decay. Range [0, 1]."""
    seq_len_warmup_tokens: int = 0
    """Sequence-length warmup (Li et al. 2022): rows grow from seq_len_warmup_start to data.seq_len linearly
    over this many training tokens (causal; 0 = off). Range [0, inf)."""
    seq_len_warmup_start: int = 64
    """First row length of the sequence-length warmup (tokens; divides data.seq_len). Range [1, inf)."""
    batch_size_warmup_tokens: int = 0
    """Batch-size warmup (GPT-3): micro-steps per step grow from 1 to gradient_accumulation_steps linearly
    over this many training tokens (0 = off). Range [0, inf)."""
    max_grad_norm: float = 1.0
    """Clip the global gradient norm to this (0 = no clipping). Range [0, inf)."""
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    """Autocast precision; fp16 uses a dynamic loss scaler."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass to save memory."""
    torch_compile: bool = False
    """Compile the model with torch.compile (slow cold start; no gain on CPU)."""
    logging_steps: int = 10
    """Write a metrics.jsonl line every this many optimizer steps. Range [1, inf)."""
    eval_steps: int = 0
    """Evaluate every this many optimizer steps (0 = only at the end). Range [0, inf)."""
    eval_max_batches: int = 0
    """Cap on validation batches per periodic evaluation (0 = the whole set; the final one is whole). Range [0, inf)."""
    eval_batch_size: int = 0
    """Sequences per evaluation batch (0 = micro_batch_size). Range [0, inf)."""
    eval_frequency_buckets: tuple[int, ...] = (100, 1000, 10000)
    """Frequency-rank edges (token types, most frequent first in the training data) of the evaluations'
    loss_by_frequency buckets: ranks 1-100, 101-1000, 1001-10000, 10001+ and unseen; empty = off. Range [1, inf)."""
    downstream_tasks: tuple[str, ...] = ()
    """lm-evaluation-harness tasks (causal/prefix-LM) evaluated during training, e.g. [arc_easy, python_docs_mc]."""
    downstream_eval_steps: int = 0
    """Run the downstream tasks every this many optimizer steps (0 = only after the last step). Range [0, inf)."""
    downstream_limit: int = 100
    """Documents per downstream task and evaluation (0 = all; bounds the cost of in-loop evaluation). Range [0, inf)."""
    downstream_include_path: str = ""
    """Folder of extra lm-eval task YAML files for downstream_tasks (local data; empty = none)."""
    save_steps: int = 0
    """Save a resumable checkpoint every this many optimizer steps (0 = none). Range [0, inf)."""
    save_total_limit: int = 2
    """Keep at most this many recent checkpoints (the best by eval loss is kept on top; 0 = all). Range [0, inf)."""
    resume_from_checkpoint: str = ""
    """'latest' or a checkpoint directory to resume from; empty = start fresh."""
    report_to: tuple[
        Literal["tensorboard", "wandb", "mlflow", "comet_ml", "aim", "clearml", "dvclive"], ...
    ] = ()
    """Extra trackers through Accelerate: tensorboard, wandb (metrics.jsonl is always written)."""
    peak_flops: float = 0.0
    """Peak FLOP/s of one device for MFU; 0 = look it up for known GPUs, else MFU is N/A. Range [0, inf)."""
    max_nonfinite_steps: int = 5
    """Stop (after saving) when this many consecutive steps have a non-finite loss. Range [1, inf)."""
    spike_threshold: float = 0.0
    """Skip a step whose loss exceeds running mean + k * std with k = this (0 = off). Range [0, inf)."""
    spike_window: int = 50
    """Steps in the running loss statistics of the spike guard. Range [2, inf)."""
    push_to_hub: bool = False
    """Push the final model (and checkpoints per hub_strategy) to the Hugging Face Hub."""
    hub_model_id: str = ""
    """Hub repository id, e.g. user/name."""
    hub_private: bool = False
    """Create the Hub repository private."""
    hub_revision: str = ""
    """Branch to push to (empty = main)."""
    hub_strategy: Literal["end", "every_save", "all_checkpoints"] = "end"
    """When to push: at the end, at every checkpoint save (model only), or every checkpoint folder."""
    checkpoint_format: Literal["auto", "accelerate", "sharded"] = "auto"
    """'sharded': torch.distributed.checkpoint, every process writes its shard and a resume may change the
    layout; 'accelerate': Accelerate's save_state; 'auto': sharded under a `parallel` layout or with
    async_save/incremental_save, else accelerate. A resume reads either format."""
    async_save: bool = False
    """Write sharded checkpoints in a background thread (training goes on; `latest` moves when complete)."""
    incremental_save: int = 0
    """Saves between full ones that store only what changed since the last full save (0 = all full). Range [0, inf)."""

    def __post_init__(self) -> None:
        if not self.output_dir.strip():
            raise ConfigError("train.output_dir is empty; give the run's directory, e.g. runs/my-run")
        expand_user(self, ("output_dir", "resume_from_checkpoint"))
        for name in ("max_steps", "micro_batch_size", "gradient_accumulation_steps", "logging_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if self.learning_rate <= 0:
            raise ConfigError(f"train.learning_rate must be > 0, got {self.learning_rate}")
        for name in ("downstream_eval_steps", "downstream_limit"):
            if getattr(self, name) < 0:
                raise ConfigError(f"train.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("min_lr_ratio", "decay_fraction", "muon_momentum"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"train.{name} must be in [0, 1], got {getattr(self, name)}")
        if not 0.0 <= self.z_loss_weight <= 1.0:
            raise ConfigError(
                f"train.z_loss_weight must be in [0, 1] (PaLM uses 1e-4), got {self.z_loss_weight}"
            )
        for name in ("seq_len_warmup_tokens", "batch_size_warmup_tokens"):
            if getattr(self, name) < 0:
                raise ConfigError(f"train.{name} must be >= 0 (0 = off), got {getattr(self, name)}")
        if self.warmup_steps < 0:
            raise ConfigError(f"train.warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.incremental_save < 0:
            raise ConfigError(f"train.incremental_save must be >= 0, got {self.incremental_save}")
        if self.checkpoint_format == "accelerate" and (self.async_save or self.incremental_save):
            raise ConfigError(
                "train.async_save and train.incremental_save need train.checkpoint_format=sharded (or auto)"
            )
        edges = self.eval_frequency_buckets
        if any(e < 1 for e in edges) or list(edges) != sorted(set(edges)):
            raise ConfigError(
                f"train.eval_frequency_buckets must be positive, strictly increasing ranks, got {list(edges)}"
            )
        if self.push_to_hub and not self.hub_model_id:
            raise ConfigError("train.push_to_hub=true needs train.hub_model_id=user/name")


@dataclass(frozen=True)
class ParallelConfig:
    """Model parallelism beyond data parallel (built by pretrain.train.parallel); data parallel
    fills the rest of the world size. Sizes are process counts."""

    tp_size: int = 1
    """Tensor-parallel processes per model replica (transformers' tp_plan; llama family). Range [1, 4096]."""
    pp_size: int = 1
    """Pipeline stages, one per process (torch.distributed.pipelining; causal decoders). Range [1, 4096]."""
    pp_schedule: Literal["gpipe", "1f1b", "interleaved"] = "1f1b"
    """Pipeline schedule: GPipe (all forwards, then all backwards), 1F1B, or interleaved 1F1B."""
    pp_microbatches: int = 0
    """Pipeline micro-batches each micro-batch is split into (0 = pp_size); divides micro_batch_size. Range [0, inf)."""
    dp_shard_size: int = 1
    """Processes each parameter, gradient and optimizer state is sharded over (FSDP2 fully_shard). Range [1, 4096]."""
    cp_size: int = 1
    """Context-parallel processes splitting each sequence (GPU only: no CPU attention kernels). Range [1, 4096]."""

    def __post_init__(self) -> None:
        for name in ("tp_size", "pp_size", "dp_shard_size", "cp_size"):
            if not 1 <= getattr(self, name) <= 4096:
                raise ConfigError(f"parallel.{name} must be in 1..4096, got {getattr(self, name)}")
        if self.pp_microbatches < 0:
            raise ConfigError(f"parallel.pp_microbatches must be >= 0, got {self.pp_microbatches}")

    def model_parallel(self) -> bool:
        """True when any mechanism besides plain data parallel is asked for."""
        return max(self.tp_size, self.pp_size, self.dp_shard_size, self.cp_size) > 1


@dataclass(frozen=True)
class NoObjectiveConfig:
    """Objectives without settings of their own use this empty section."""


def make_run_config(objective_cls: type) -> type:
    """The top-level config class for one objective: model, data, train and its objective section."""
    return dataclasses.make_dataclass(
        "RunConfig",
        [
            ("model", ModelConfig, field(default_factory=ModelConfig)),
            ("data", DataConfig, field(default_factory=DataConfig)),
            ("train", TrainConfig, field(default_factory=TrainConfig)),
            ("parallel", ParallelConfig, field(default_factory=ParallelConfig)),
            ("objective", objective_cls, field(default_factory=objective_cls)),
        ],
        frozen=True,
    )


def replace(cfg: Any, **sections: dict[str, Any]) -> Any:
    """Copy `cfg` with some section fields changed: replace(cfg, train={"max_steps": 5})."""
    updated = {name: dataclasses.replace(getattr(cfg, name), **values) for name, values in sections.items()}
    return dataclasses.replace(cfg, **updated)
