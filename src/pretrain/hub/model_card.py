"""The model card (README.md) pushed with a model: Hub metadata in YAML, then what the run was.

The metadata (library_name, license, tags incl. the objective, datasets, pipeline_tag, and a
model-index with the final evaluation) is rendered by huggingface_hub's `ModelCardData`, so the Hub
indexes it as it indexes transformers' own cards. The body says the objective, the data, the tokens
seen, the evaluation, the loss curve and the resolved config. Everything is read from the run's
files (resolved_config.yaml, eval_results.json, trainer_state.json or metrics.jsonl, config.json,
loss_curve.png), so a card can be written for any output or checkpoint folder, also after the fact.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import EvalResult, ModelCardData

# A README.md with this line was written here and may be regenerated; without it, it is the user's.
MARKER = "<!-- Written by `pretrain`; delete this line to keep your edits from being overwritten. -->"
LICENSE = "apache-2.0"  # the project's license; edit the card for data or weights under other terms
# Keys of eval_results.json that describe the run rather than measure the model.
RUN_KEYS = ("objective", "num_parameters", "tokens_seen", "steps", "world_size")
BASELINE_PREFIXES = ("gzip_", "bz2_", "xz_", "zstd_")  # classical compressors, not the model
# Hub pipeline tag and loading snippet by the end of the saved architecture's class name.
PIPELINES = {
    "ForCausalLM": ("text-generation", "AutoModelForCausalLM"),
    "LMHeadModel": ("text-generation", "AutoModelForCausalLM"),
    "ForMaskedLM": ("fill-mask", "AutoModelForMaskedLM"),
    "ForConditionalGeneration": ("text2text-generation", "AutoModelForSeq2SeqLM"),
}
METRIC_NAMES = {
    "eval_loss": "Validation loss (nats per target)",
    "perplexity": "Perplexity",
    "bits_per_byte": "Bits per UTF-8 byte",
    "accuracy": "Target accuracy",
}


@dataclass
class RunInfo:
    """What a card says about a run, read from its folder."""

    config: dict[str, Any] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)
    tokens_seen: int | None = None
    steps: int | None = None
    architecture: str = ""
    loadable: bool = False  # a from_pretrained model (not only a resumable training checkpoint)
    sentence_transformers: bool = False
    has_loss_curve: bool = False

    @property
    def objective(self) -> str:
        return str(self.results.get("objective", "")) or "unknown"

    @property
    def model_metrics(self) -> dict[str, float]:
        """The evaluation of the model: floats (counts such as steps are ints), minus compressors."""
        return {
            k: v
            for k, v in self.results.items()
            if isinstance(v, float) and k not in RUN_KEYS and not k.startswith(BASELINE_PREFIXES)
        }

    @property
    def pipeline(self) -> tuple[str | None, str]:
        """(Hub pipeline tag, class that loads the model)."""
        if self.sentence_transformers:
            return "sentence-similarity", "SentenceTransformer"
        for suffix, pipeline in PIPELINES.items():
            if self.architecture.endswith(suffix):
                return pipeline
        return None, "AutoModel"


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def load_run_info(folder: Path) -> RunInfo:
    """Collect what the card needs from an output or checkpoint folder; missing files are fine."""
    config_path = folder / "resolved_config.yaml"
    info = RunInfo(
        config=yaml.safe_load(config_path.read_text()) or {} if config_path.is_file() else {},
        results=_read_json(folder / "eval_results.json"),
        architecture=(_read_json(folder / "config.json").get("architectures") or [""])[0],
        loadable=(folder / "config.json").is_file() or (folder / "modules.json").is_file(),
        sentence_transformers=(folder / "modules.json").is_file(),
        has_loss_curve=(folder / "loss_curve.png").is_file(),
    )
    state = _read_json(folder / "trainer_state.json")
    metrics_path = folder / "metrics.jsonl"
    lines = metrics_path.read_text().splitlines() if metrics_path.is_file() else []
    last_logged = json.loads(lines[-1]) if lines else {}
    for source in (info.results, state, last_logged):
        info.tokens_seen = info.tokens_seen or source.get("tokens_seen")
        info.steps = info.steps or source.get("steps") or source.get("step")
    return info


def describe_data(data: dict[str, Any]) -> tuple[str, str, str]:
    """(Hub dataset id or "", dataset type for the model-index, a sentence for the card)."""
    if data.get("train_file"):
        name = Path(data["train_file"]).name
        return "", f"local:{name}", f"the local file `{name}`"
    if data.get("dataset_name"):
        subset = f" (`{data['dataset_config_name']}`)" if data.get("dataset_config_name") else ""
        return data["dataset_name"], data["dataset_name"], f"the Hub dataset `{data['dataset_name']}`{subset}"
    return "", "pretrain-embedded-corpus", "the embedded corpus (the running CPython's own documentation)"


def build_metadata(info: RunInfo, repo_id: str) -> ModelCardData:
    """The YAML front matter: library, license, tags, datasets and the model-index."""
    pipeline_tag, _ = info.pipeline
    data = info.config.get("data", {})
    dataset_id, dataset_type, dataset_text = describe_data(data)
    family = info.config.get("model", {}).get("family")
    tags = [t for t in ("pretrain", info.objective if info.results else "", family) if t]
    eval_results = [
        EvalResult(
            task_type=pipeline_tag or "other",
            task_name=f"{info.objective} pretraining",
            dataset_type=dataset_type,
            dataset_name=dataset_text.removeprefix("the "),
            dataset_config=data.get("dataset_config_name") or None,
            dataset_split="validation",
            metric_type=key,
            metric_name=METRIC_NAMES.get(key, key),
            metric_value=value,
        )
        for key, value in info.model_metrics.items()
    ]
    eval_results += downstream_results(info, pipeline_tag)
    return ModelCardData(
        library_name="sentence-transformers" if info.sentence_transformers else "transformers",
        license=LICENSE,
        tags=tags,
        datasets=[dataset_id] if dataset_id else None,
        pipeline_tag=pipeline_tag,
        model_name=repo_id.split("/")[-1],
        eval_results=eval_results or None,
    )


def downstream_results(info: RunInfo, pipeline_tag: str | None) -> list[EvalResult]:
    """model-index entries of eval_results.json's `downstream` (lm-evaluation-harness tasks)."""
    return [
        EvalResult(
            task_type=pipeline_tag or "text-generation",
            task_name=f"{task} (lm-evaluation-harness)",
            dataset_type=task,
            dataset_name=task,
            metric_type=metric,
            metric_name=metric,
            metric_value=row["value"],
            source_name="lm-evaluation-harness",
            source_url="https://github.com/EleutherAI/lm-evaluation-harness",
        )
        for task, metrics in (info.results.get("downstream") or {}).items()
        for metric, row in metrics.items()
        if isinstance(row, dict) and isinstance(row.get("value"), int | float)
    ]


def build_body(info: RunInfo, repo_id: str) -> str:
    """The Markdown below the metadata."""
    model_cfg, data, train = (info.config.get(k, {}) for k in ("model", "data", "train"))
    _, _, dataset_text = describe_data(data)
    _, loader = info.pipeline
    params = info.results.get("num_parameters")
    size = f" with {params / 1e6:.2f}M non-embedding parameters" if params else ""
    with_objective = f" with the **{info.objective}** objective" if info.results else ""
    lines = [
        MARKER,
        "",
        f"# {repo_id.split('/')[-1]}",
        "",
        f"A {model_cfg.get('family', '')} model{size} pretrained from scratch{with_objective} by `pretrain`.",
        "",
        "## Training",
        "",
        *([f"- Objective: `{info.objective}`"] if info.results else []),
        f"- Data: {dataset_text}, in {data.get('seq_len', '?')}-token sequences",
        f"- Tokens seen: {info.tokens_seen:,}" if info.tokens_seen else "- Tokens seen: unknown",
        f"- Optimizer steps: {info.steps}" if info.steps else "- Optimizer steps: unknown",
        f"- Peak learning rate {train.get('learning_rate')} ({train.get('lr_scheduler_type')} schedule, "
        f"{train.get('warmup_steps')} warmup steps), {train.get('mixed_precision', 'no')} mixed precision",
    ]
    if info.model_metrics:
        lines += ["", "## Evaluation (validation split)", "", "| metric | value |", "|---|---|"]
        lines += [f"| {METRIC_NAMES.get(k, k)} | {v:.4f} |" for k, v in info.model_metrics.items()]
        baselines = {k: v for k, v in info.results.items() if k.startswith(BASELINE_PREFIXES)}
        if baselines:
            shown = ", ".join(f"{k.split('_')[0]} {v:.3f}" for k, v in baselines.items())
            lines += ["", f"Classical compressors on the same text, in bits per byte: {shown}."]
    downstream = info.results.get("downstream") or {}
    if downstream:
        lines += ["", "## Downstream tasks (lm-evaluation-harness)", "", "| task | metric | value | stderr |"]
        lines += ["|---|---|---|---|"]
        for task, metrics in downstream.items():
            for metric, row in metrics.items():
                stderr = f"{row['stderr']:.4f}" if row.get("stderr") is not None else ""
                lines.append(f"| {task} | {metric} | {row['value']:.4f} | {stderr} |")
    if info.has_loss_curve:
        lines += ["", "## Loss curve", "", "![Training loss and learning rate](loss_curve.png)"]
    lines += ["", "## Usage", "", *usage(loader, repo_id, info.loadable)]
    if info.config:
        config_yaml = yaml.safe_dump(info.config, sort_keys=False).strip()
        lines += ["", "## Resolved config", "", "```yaml", config_yaml, "```"]
    return "\n".join(lines) + "\n"


def usage(loader: str, repo_id: str, loadable: bool) -> list[str]:
    """Markdown lines saying how to use what was pushed."""
    if not loadable:
        return [
            "A resumable training checkpoint (Accelerate state: model, optimizer, scheduler, RNG), not a",
            "`from_pretrained` model. Download it and continue training with",
            "`--train.resume_from_checkpoint=DIR`.",
        ]
    if loader == "SentenceTransformer":
        code = [
            "from sentence_transformers import SentenceTransformer",
            "",
            f'model = SentenceTransformer("{repo_id}")',
        ]
    else:
        code = [
            f"from transformers import AutoTokenizer, {loader}",
            "",
            f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}")',
            f'model = {loader}.from_pretrained("{repo_id}")',
        ]
    return ["```python", *code, "```"]


def build_model_card(folder: Path, repo_id: str) -> str:
    """The full README.md text for the run in `folder`, to be pushed as `repo_id`."""
    info = load_run_info(folder)
    return f"---\n{build_metadata(info, repo_id).to_yaml()}\n---\n\n{build_body(info, repo_id)}"


def write_model_card(folder: Path, repo_id: str) -> Path | None:
    """Write folder/README.md atomically unless it is a card the user wrote; its path, or None."""
    path = folder / "README.md"
    if path.is_file() and MARKER not in path.read_text(errors="replace"):
        return None
    tmp = folder / ".README.md.tmp"
    tmp.write_text(build_model_card(folder, repo_id))
    os.replace(tmp, path)
    return path
