"""Contrastive sentence embeddings (SimCSE, Gao et al. 2021) with InfoNCE and in-batch negatives.

Everything that makes this objective:
- Data: no packed blocks. Each document is cut into paragraphs (at blank lines) of at least
  `min_words` words; an item is a paragraph as a whole (`text`) and cut at its middle word into a
  first half (`query`) and a second half (`doc`). Supervised mode reads (anchor, positive[, negative])
  rows instead: `data.train_file` is the jsonl and `data.text_column` names its anchor column.
- Model: a BERT/RoBERTa encoder from a config (or `model.model_name_or_path`, e.g. a masked-LM run),
  cls or masked-mean pooling, SimCSE's MLP head during training only, an MLM head when mlm_weight > 0.
- Loss (model.train()): unsupervised, each paragraph is encoded twice, either whole with dropout as
  the only augmentation (SimCSE) or as two random spans (views=crop, Contriever); supervised, anchor -> positive with the hard negatives as extra candidates. The
  candidates of every process are gathered with gradients, so the negatives are the global batch.
  Gradient accumulation adds anchors, not negatives: each micro-step is its own pool.
- Evaluation (model.eval(): no dropout, so the two unsupervised views would be identical): held-out
  retrieval of each paragraph's second half from its first half, plus alignment and uniformity
  (pretrain.objectives.retrieval), and Spearman on `sts_file` if one is given.
- Saving: a sentence-transformers folder (encoder + tokenizer, Pooling, Normalize); heads dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import datasets
import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torch import nn
from transformers import (
    AutoModel,
    AutoModelForMaskedLM,
    DataCollatorForLanguageModeling,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from pretrain.config import ConfigError
from pretrain.data.fast_encode import batch_encoder
from pretrain.data.shard_set import ShardSet
from pretrain.data.text import DataError
from pretrain.data.tokenizer import special_ids
from pretrain.objectives.base import Batch, LossOutput, Objective
from pretrain.objectives.masked import build_encoder_config
from pretrain.objectives.retrieval import (
    gather_across_processes,
    info_nce,
    load_sts_pairs,
    retrieval_metrics,
    retrieval_stats,
    spearman,
)


@dataclass(frozen=True)
class ContrastiveConfig:
    mode: Literal["unsupervised", "supervised"] = "unsupervised"
    """unsupervised: SimCSE on the text data's paragraphs; supervised: rows of a jsonl data.train_file."""
    views: Literal["dropout", "crop"] = "dropout"
    """Unsupervised positives: 'dropout', the same paragraph twice (SimCSE); 'crop', two independent random
    token spans of the paragraph, dropout still on (Contriever's cropping, Izacard et al. 2022)."""
    crop_ratio: tuple[float, float] = (0.1, 0.5)
    """views=crop: each span's length is this uniform fraction range of the paragraph (Contriever: 0.1-0.5). Range (0, 1]."""
    temperature: float = 0.05
    """InfoNCE temperature tau on cosine similarities (Gao et al. 2021, SimCSE, appendix D: 0.05). Range (0, inf)."""
    pooling: Literal["cls", "mean"] = "cls"
    """Sentence vector: the first token's last hidden state, or the mean over non-padding tokens."""
    mlp_head: bool = True
    """Train through SimCSE's MLP head (Linear + tanh on the pooled vector); never saved."""
    mlm_weight: float = 0.0
    """Weight of an auxiliary masked-LM loss per anchor (SimCSE's --do_mlm, its code's default 0.1); 0 = off. Range [0, inf)."""
    mlm_probability: float = 0.15
    """Fraction of tokens masked for the auxiliary MLM loss, replaced 80/10/10 (BERT, Devlin et al. 2019). Range [0, 1]."""
    min_words: int = 8
    """Skip paragraphs with fewer whitespace-separated words (each half needs some text). Range [0, inf)."""
    sts_file: str = ""
    """Optional local .csv/.tsv/.jsonl with sentence1, sentence2, score: adds sts_spearman to evaluation."""


class SentenceEncoder(nn.Module):
    """A BERT/RoBERTa backbone, pooling, SimCSE's training-only MLP head and optionally its MLM head."""

    def __init__(self, backbone: PreTrainedModel, pooling: str, mlp_head: bool) -> None:
        super().__init__()
        self.backbone = backbone  # AutoModel, or AutoModelForMaskedLM when the MLM loss is on
        self.pooling = pooling
        width = backbone.config.hidden_size
        self.head = nn.Sequential(nn.Linear(width, width), nn.Tanh()) if mlp_head else nn.Identity()

    @property
    def config(self) -> PretrainedConfig:
        return self.backbone.config

    @property
    def encoder(self) -> PreTrainedModel:
        """The bare BertModel/RobertaModel: what is saved."""
        return self.backbone.base_model

    def get_input_embeddings(self) -> nn.Module:
        return self.backbone.get_input_embeddings()

    def gradient_checkpointing_enable(self, **kwargs) -> None:
        self.backbone.gradient_checkpointing_enable(**kwargs)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        mlm_input_ids: torch.Tensor | None = None,
        mlm_attention_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Sentence vectors (n, d) of input_ids (n, t), through the MLP head while training; and MLM
        logits (b, t, vocab) of mlm_input_ids when given. One call, so DDP sees one forward per step."""
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        pooled = pool(hidden, attention_mask, self.pooling)
        embeddings = self.head(pooled) if self.training else pooled
        if mlm_input_ids is None:
            return embeddings, None
        return embeddings, self.backbone(input_ids=mlm_input_ids, attention_mask=mlm_attention_mask).logits


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, how: str) -> torch.Tensor:
    """(n, d) sentence vectors from hidden states (n, t, d): the first token, or the mean of real tokens."""
    if how == "cls":
        return hidden[:, 0]
    weights = attention_mask.unsqueeze(-1).to(hidden.dtype)  # padding contributes nothing
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)


class Contrastive(Objective):
    """SimCSE: InfoNCE between two views of each text, negatives from the whole global batch."""

    name = "contrastive"
    Config = ContrastiveConfig
    families = ("bert", "roberta")
    post_processor = "roberta"  # <s> A </s>: the first token is the cls vector
    language_model = False
    fixed_length_rows = False  # paragraphs of any length, padded per batch

    def __init__(self, cfg: Any, tokenizer: PreTrainedTokenizerBase) -> None:
        super().__init__(cfg, tokenizer)
        self.ocfg: ContrastiveConfig = cfg.objective
        if self.ocfg.mode == "unsupervised" and cfg.model.dropout <= 0:
            raise ConfigError(
                "unsupervised SimCSE's only augmentation is dropout; set model.dropout > 0 (Gao et al. 2021, sec. 3: 0.1)"
            )
        ratio = self.ocfg.crop_ratio
        if len(ratio) != 2 or not 0 < ratio[0] <= ratio[1] <= 1:
            raise ConfigError(
                f"objective.crop_ratio={list(ratio)} must be [low, high] with 0 < low <= high <= 1, e.g. [0.1, 0.5]"
            )
        if self.ocfg.mode == "supervised" and not cfg.data.train_file.endswith((".jsonl", ".json")):
            raise ConfigError(
                "objective.mode=supervised reads (anchor, positive[, negative]) rows: give data.train_file=ROWS.jsonl "
                "and data.text_column=<anchor column>"
            )
        self.cls_id = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
        self.sep_id = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
        self.sts = load_sts_pairs(self.ocfg.sts_file) if self.ocfg.sts_file else None
        self.masker = None
        if self.ocfg.mlm_weight > 0:
            self.masker = DataCollatorForLanguageModeling(
                tokenizer, mlm_probability=self.ocfg.mlm_probability
            )

    # --- model -----------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        mcfg = self.cfg.model
        mlm = self.ocfg.mlm_weight > 0
        auto = AutoModelForMaskedLM if mlm else AutoModel
        no_pooler = {} if mlm else {"add_pooling_layer": False}  # an unused pooler would stall DDP
        if mcfg.model_name_or_path:
            dropout = {"hidden_dropout_prob": mcfg.dropout, "attention_probs_dropout_prob": mcfg.dropout}
            backbone = auto.from_pretrained(
                mcfg.model_name_or_path, attn_implementation="sdpa", **dropout, **no_pooler
            )
        else:
            if mcfg.family not in self.families:
                raise ConfigError(
                    f"model.family={mcfg.family!r} cannot train objective {self.name}; use one of {self.families}"
                )
            config = build_encoder_config(
                mcfg, len(self.tokenizer), self.block_len(), special_ids(self.tokenizer)
            )
            backbone = auto.from_config(config, attn_implementation="sdpa", **no_pooler)
        return SentenceEncoder(backbone, self.ocfg.pooling, self.ocfg.mlp_head)

    def load_model(self, path: str | Path) -> nn.Module:
        backbone = AutoModel.from_pretrained(str(path), attn_implementation="sdpa", add_pooling_layer=False)
        return SentenceEncoder(backbone, self.ocfg.pooling, mlp_head=False)

    def save_model(self, model: nn.Module, output_dir: str | Path, state_dict: dict | None = None) -> None:
        """A sentence-transformers folder: the bare encoder and tokenizer at the root (stock
        `AutoModel.from_pretrained` loads it too), then modules.json, 1_Pooling and 2_Normalize."""
        prefix = next(name for name, m in model.named_modules() if m is model.encoder) + "."
        if state_dict is not None:  # e.g. gathered under ZeRO-3: keep the encoder's tensors only
            state_dict = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
        model.encoder.save_pretrained(str(output_dir), state_dict=state_dict)
        self.tokenizer.save_pretrained(str(output_dir))
        save_sentence_transformers_modules(
            Path(output_dir), model.config.hidden_size, self.ocfg.pooling, self.block_len()
        )

    # --- data ------------------------------------------------------------------------------
    def build_dataset(self, raw: datasets.Dataset, accelerator: Accelerator) -> datasets.Dataset:
        """Token ids of each item's texts (no special tokens; `collate` adds them), as torch tensors; shards
        give the paragraphs of their documents, decoded with their tokenizer (supervised needs jsonl rows)."""
        raw = raw.document_texts() if isinstance(raw, ShardSet) else raw
        if not isinstance(raw, datasets.Dataset):
            raise DataError(
                "the contrastive objective reads paragraphs of text or of shard documents, not a stream or a "
                "mixture; give it --data.train_file=TEXT or a shard directory"
            )
        with accelerator.main_process_first():
            texts = self._supervised_rows(raw) if self.ocfg.mode == "supervised" else None
            if texts is None:
                texts = raw.map(
                    paragraph_items,
                    batched=True,
                    remove_columns=raw.column_names,
                    fn_kwargs={"min_words": self.ocfg.min_words},
                    desc="paragraphs",
                )
            encode_texts = batch_encoder(self.tokenizer, self.cfg.data.special_tokens_in_text)

            def encode(batch: dict[str, list[str]]) -> dict[str, list[np.ndarray]]:
                return {k: encode_texts(v) for k, v in batch.items()}

            ids = texts.map(encode, batched=True, batch_size=2000, desc="tokenize")
        if len(ids) == 0:
            raise DataError(
                f"no paragraph has objective.min_words={self.ocfg.min_words} words; give more text or lower it"
            )
        # Evaluation pools are consecutive items: shuffle (fixed seed) so that a pool is a random sample of
        # the held-out paragraphs, not the neighbouring paragraphs of one document.
        return ids.shuffle(seed=0).flatten_indices().with_format("torch")

    def _supervised_rows(self, raw: datasets.Dataset) -> datasets.Dataset | None:
        """Rows of the jsonl data files whose anchor is a text of `raw` (None when none is: plain text)."""
        data = self.cfg.data
        files = [f for f in (data.train_file, data.validation_file) if f.endswith((".jsonl", ".json"))]
        rows = datasets.load_dataset("json", data_files=files, split="train")
        if "positive" not in rows.column_names:
            raise DataError(f"{files} need a 'positive' column beside the anchor column {data.text_column!r}")
        anchors = set(raw["text"])
        rows = rows.filter(lambda row: row[data.text_column] in anchors)
        if len(rows) == 0:
            return None
        columns = {data.text_column: "query", "positive": "doc", "negative": "negative"}
        kept = [c for c in columns if c in rows.column_names]
        return rows.select_columns(kept).rename_columns({c: columns[c] for c in kept})

    def collate(self, examples: list[dict[str, torch.Tensor]], generator: torch.Generator) -> Batch:
        """Each view as <cls> ids <sep> padded to one length: `{view}_ids`, `{view}_mask` (b, t);
        with the MLM loss, `mlm_ids`/`mlm_labels`: the training anchor masked 15% (80/10/10)."""
        views = {
            v: [e[v] for e in examples] for v in ("query", "doc", "negative", "text") if v in examples[0]
        }
        if self.ocfg.mode == "unsupervised" and self.ocfg.views == "crop":
            views["crop_a"], views["crop_b"] = (
                [crop(t, self.ocfg.crop_ratio, generator) for t in views["text"]] for _ in "ab"
            )
        batch = self._pad(views)
        if self.masker is not None:
            anchor = self._training_views(batch)[0]
            ids = batch[f"{anchor}_ids"]
            special = (batch[f"{anchor}_mask"] == 0) | (ids == self.cls_id) | (ids == self.sep_id)
            self.masker.generator = generator  # transformers' masking draws from .generator
            batch["mlm_ids"], batch["mlm_labels"] = self.masker.torch_mask_tokens(
                ids.clone(), special_tokens_mask=special
            )
        return batch

    def _pad(self, views: dict[str, list[torch.Tensor]]) -> Batch:
        """<cls> ids <sep> (truncated to data.seq_len) of every view, right-padded to one common length."""
        cls, sep, limit = torch.tensor([self.cls_id]), torch.tensor([self.sep_id]), self.block_len() - 2
        rows = {v: [torch.cat([cls, ids[:limit].long(), sep]) for ids in seqs] for v, seqs in views.items()}
        length = max(len(r) for seqs in rows.values() for r in seqs)
        batch = {}
        for v, seqs in rows.items():
            batch[f"{v}_ids"] = torch.full((len(seqs), length), self.tokenizer.pad_token_id, dtype=torch.long)
            batch[f"{v}_mask"] = torch.zeros((len(seqs), length), dtype=torch.long)
            for i, r in enumerate(seqs):
                batch[f"{v}_ids"][i, : len(r)], batch[f"{v}_mask"][i, : len(r)] = r, 1
        return batch

    def _training_views(self, batch: Batch) -> tuple[str, ...]:
        """Views encoded in training: the anchor first, then the candidate groups."""
        if self.ocfg.mode == "unsupervised" and self.ocfg.views == "crop":
            return ("crop_a", "crop_b")  # two random spans of each paragraph
        if self.ocfg.mode == "unsupervised":
            return ("text", "text")  # the same paragraph twice; dropout makes the views differ
        return ("query", "doc", "negative") if "negative_ids" in batch else ("query", "doc")

    # --- loss and metrics ------------------------------------------------------------------
    def count_targets(self, batch: Batch) -> int:
        return int(batch["query_ids"].shape[0])  # anchors

    def count_tokens(self, batch: Batch) -> int:
        """Real (non-padding) tokens of every view encoded in training; rows vary in length."""
        return int(sum(batch[f"{v}_mask"].sum() for v in self._training_views(batch)))

    def compute_loss(self, model: nn.Module, batch: Batch) -> LossOutput:
        views = self._training_views(batch) if model.training else ("query", "doc")
        ids = torch.cat([batch[f"{v}_ids"] for v in views])  # (views * b, t)
        mask = torch.cat([batch[f"{v}_mask"] for v in views])
        mlm = model.training and self.masker is not None
        mlm_inputs = (batch["mlm_ids"], batch[f"{views[0]}_mask"]) if mlm else ()
        embeddings, mlm_logits = model(ids, mask, *mlm_inputs)
        anchors, *candidates = embeddings.split(batch["query_ids"].shape[0])  # each (b, d)
        if not model.training:
            stats = retrieval_stats(anchors, candidates[0], self.ocfg.temperature)
            return LossOutput(stats.pop("loss_sum"), stats.pop("num_targets"), stats)
        gathered = [gather_across_processes(c) for c in candidates]
        labels = gathered[0][1] + torch.arange(len(anchors), device=anchors.device)
        loss_sum, correct = info_nce(
            anchors, torch.cat([g for g, _ in gathered]), labels, self.ocfg.temperature
        )
        if mlm:
            # Each micro-batch's mean token loss, weighted by its anchors (SimCSE: loss + lambda * mlm).
            token_sum = F.cross_entropy(
                mlm_logits.flatten(0, 1).float(), batch["mlm_labels"].flatten(), reduction="sum"
            )
            masked = (batch["mlm_labels"] != -100).sum().clamp(min=1)
            loss_sum = loss_sum + self.ocfg.mlm_weight * len(anchors) * token_sum / masked
        return LossOutput(loss_sum, torch.tensor(len(anchors)), {"correct": correct})

    def finalize_metrics(self, sums: dict[str, float]) -> dict[str, float]:
        return retrieval_metrics(sums)

    def whole_set_metrics(self, model: nn.Module, accelerator: Accelerator) -> dict[str, float]:
        """Spearman between cosine similarity and the gold score of every pair in `sts_file`."""
        if self.sts is None:
            return {}
        first, second, gold = self.sts
        batch_size = self.cfg.train.eval_batch_size or self.cfg.train.micro_batch_size
        a, b = (self.encode(model, texts, batch_size, accelerator.device) for texts in (first, second))
        return {"sts_spearman": spearman(F.cosine_similarity(a, b), gold)}

    @torch.no_grad()
    def encode(
        self, model: nn.Module, texts: list[str], batch_size: int, device: torch.device
    ) -> torch.Tensor:
        """Sentence vectors (n, d) of `texts`, in batches (every process encodes all of them)."""
        out = []
        encode_texts = batch_encoder(self.tokenizer, self.cfg.data.special_tokens_in_text)
        for start in range(0, len(texts), batch_size):
            ids = encode_texts(texts[start : start + batch_size])
            batch = self._pad(
                {"query": [torch.tensor(i) for i in ids]}
            )  # a copy: tiktoken arrays are read-only
            out.append(model(batch["query_ids"].to(device), batch["query_mask"].to(device))[0].float())
        return torch.cat(out)


def crop(ids: torch.Tensor, ratio: tuple[float, float], generator: torch.Generator) -> torch.Tensor:
    """A random contiguous span of `ids` whose length is a uniform fraction in `ratio` of len(ids), >= 1."""
    low, high = ratio
    fraction = low + (high - low) * torch.rand((), generator=generator).item()
    length = max(1, round(fraction * len(ids)))
    start = int(torch.randint(len(ids) - length + 1, (), generator=generator))
    return ids[start : start + length]


def paragraph_items(batch: dict[str, list[str]], min_words: int) -> dict[str, list[str]]:
    """Paragraphs (blank-line separated, whitespace collapsed) of >= min_words words: the whole
    paragraph (`text`), its first half of words (`query`) and its second half (`doc`)."""
    items = {"text": [], "query": [], "doc": []}
    for document in batch["text"]:
        for paragraph in re.split(r"\n\s*\n", document):
            words = paragraph.split()
            if len(words) >= min_words:
                half = len(words) // 2
                items["text"].append(" ".join(words))
                items["query"].append(" ".join(words[:half]))
                items["doc"].append(" ".join(words[half:]))
    return items


def save_sentence_transformers_modules(out: Path, dimension: int, pooling: str, max_seq_length: int) -> None:
    """Let sentence-transformers write its own files around the saved encoder: Transformer -> Pooling
    -> Normalize, so `SentenceTransformer(out).encode(...)` returns unit vectors offline."""
    import json

    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    no_pooler = {"add_pooling_layer": False}  # the saved encoder has none; do not build a random one
    transformer = Transformer(str(out), model_kwargs=no_pooler, max_seq_length=max_seq_length)
    modules = [transformer, Pooling(dimension, pooling_mode=pooling), Normalize()]
    SentenceTransformer(modules=modules, device="cpu").save(str(out))
    config_path = out / "sentence_bert_config.json"
    config = json.loads(config_path.read_text())
    config["model_kwargs"] = no_pooler
    config_path.write_text(json.dumps(config, indent=2))
