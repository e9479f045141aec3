"""Spearman rank correlation between predictions and references (STS-B's metric), via scipy."""

import datasets
import evaluate
from scipy.stats import spearmanr


class Spearmanr(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description="Spearman rank-order correlation coefficient.",
            citation="",
            inputs_description="predictions, references: real numbers",
            features=datasets.Features(
                {"predictions": datasets.Value("float64"), "references": datasets.Value("float64")}
            ),
        )

    def _compute(self, predictions, references) -> dict:
        return {"spearmanr": float(spearmanr(references, predictions).statistic)}
