"""Spearman rank correlation between predictions and references (STS-B's metric), via scipy."""

import evaluate
from scipy.stats import spearmanr

from pretrain.eval.metrics._base import paired_metric_info


class Spearmanr(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return paired_metric_info(
            "Spearman rank-order correlation coefficient.",
            "predictions, references: real numbers",
            "float64",
        )

    def _compute(self, predictions, references) -> dict:
        return {"spearmanr": float(spearmanr(references, predictions).statistic)}
