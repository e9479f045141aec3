"""Accuracy: the fraction of predictions equal to their reference (the `evaluate` Hub metric's definition)."""

import evaluate
import numpy as np

from pretrain.eval.metrics._base import paired_metric_info


class Accuracy(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return paired_metric_info(
            "Fraction of predictions equal to the reference label.",
            "predictions, references: integer labels",
            "int64",
        )

    def _compute(self, predictions, references) -> dict:
        return {"accuracy": float(np.mean(np.asarray(predictions) == np.asarray(references)))}
