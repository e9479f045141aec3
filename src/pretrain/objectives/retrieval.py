"""Contrastive losses and embedding metrics: InfoNCE, a gradient-preserving gather, retrieval,
alignment/uniformity and Spearman correlation on a sentence-pair similarity file.

Retrieval is measured within a *pool*: one evaluation batch of (query, document) pairs, every
document of the batch being a candidate for every query. Pools are the harness's evaluation batches
(`train.eval_batch_size` pairs, the last one holding the remainder), so the statistics are plain sums
per batch, streamed, and identical whatever the number of processes; `pool_size` reports the mean
number of candidates per query, which sets how hard recall@1 is.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

from pretrain.config import ConfigError


def info_nce(
    anchors: torch.Tensor, candidates: torch.Tensor, labels: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed InfoNCE of anchors (b, d) against candidates (n, d) whose row labels[i] is anchor i's
    positive, on cosine similarities / temperature; and the number of anchors whose positive ranks first.

    Same math as sentence-transformers' MultipleNegativesRankingLoss (its scale 20 = 1 / 0.05), which
    needs a SentenceTransformer model and returns a mean; the shared trainer needs a sum and a count.
    """
    logits = F.normalize(anchors.float(), dim=-1) @ F.normalize(candidates.float(), dim=-1).T / temperature
    loss_sum = F.cross_entropy(logits, labels, reduction="sum")  # logits (b, n)
    correct = (logits.detach().argmax(-1) == labels).sum()
    return loss_sum, correct


def gather_across_processes(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Every process's rows of x (b, d), in rank order, and where this process's rows start.

    torch.distributed.nn's all_gather is differentiable: in the backward pass each process receives
    the sum of every process's gradient for its rows, so a loss over the gathered batch trains all of
    them (accelerate's gather detaches).
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x, 0
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x.contiguous())), dist.get_rank() * x.shape[0]


@torch.no_grad()
def retrieval_stats(
    queries: torch.Tensor, documents: torch.Tensor, temperature: float
) -> dict[str, torch.Tensor]:
    """Summed statistics of one pool: query i (b, d) must retrieve document i among the b documents.

    Ranks count ties against the query (a collapsed encoder whose vectors are all equal scores rank b,
    not 1). Alignment and uniformity follow Wang & Isola 2020 (alpha = 2, t = 2) on unit vectors:
    alignment = E ||q - d||^2 over positive pairs; uniformity = log E exp(-2 ||x - y||^2) over all
    distinct pairs of the pool's queries and documents.
    """
    q, d = F.normalize(queries.float(), dim=-1), F.normalize(documents.float(), dim=-1)
    sims = q @ d.T  # (b, b); the diagonal holds the positives
    b = sims.shape[0]
    rank = (sims >= sims.diagonal()[:, None]).sum(-1).double()  # 1 = the positive scores highest
    both = torch.cat([q, d])
    return {
        "loss_sum": F.cross_entropy(sims / temperature, torch.arange(b, device=sims.device), reduction="sum"),
        "num_targets": torch.tensor(b, dtype=torch.float64),
        "hits_at_1": (rank <= 1).sum(),
        "hits_at_10": (rank <= 10).sum(),
        "reciprocal_rank": (1.0 / rank).sum(),
        "pool_size": torch.tensor(b * b, dtype=torch.float64),
        "alignment": (q - d).pow(2).sum(-1).sum(),
        "uniformity_exp": torch.pdist(both).pow(2).mul(-2).exp().sum(),
        "uniformity_pairs": torch.tensor(len(both) * (len(both) - 1) / 2, dtype=torch.float64),
    }


def retrieval_metrics(sums: dict[str, float]) -> dict[str, float]:
    """Metrics over all pools from the summed `retrieval_stats`."""
    n = max(sums["num_targets"], 1.0)
    return {
        "eval_loss": sums["loss_sum"] / n,
        "recall@1": sums["hits_at_1"] / n,
        "recall@10": sums["hits_at_10"] / n,
        "mrr": sums["reciprocal_rank"] / n,
        "alignment": sums["alignment"] / n,
        "uniformity": math.log(max(sums["uniformity_exp"], 1e-300) / max(sums["uniformity_pairs"], 1.0)),
        "pool_size": sums["pool_size"] / n,
    }


def load_sts_pairs(path: str) -> tuple[list[str], list[str], list[float]]:
    """(sentence1, sentence2, score) columns of a local .csv, .tsv or .jsonl/.json file (STS format)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(
            f"objective.sts_file={path} does not exist; give a local STS-format file or leave it empty"
        )
    if p.suffix.lower() in (".jsonl", ".json"):
        rows = [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        delimiter = "\t" if p.suffix.lower() == ".tsv" else ","
        with p.open(encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f, delimiter=delimiter, quoting=csv.QUOTE_MINIMAL))
    missing = {"sentence1", "sentence2", "score"} - set(rows[0] if rows else ())
    if missing:
        raise ConfigError(
            f"objective.sts_file={path} lacks columns {sorted(missing)}; it needs sentence1, sentence2, score"
        )
    return [r["sentence1"] for r in rows], [r["sentence2"] for r in rows], [float(r["score"]) for r in rows]


def spearman(predicted: torch.Tensor, gold: list[float]) -> float:
    """Spearman rank correlation between predicted similarities and gold scores (ties averaged)."""
    from scipy.stats import spearmanr

    return float(spearmanr(predicted.double().cpu().numpy(), gold).statistic)
