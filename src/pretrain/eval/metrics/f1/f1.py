"""F1: per label 2PR/(P+R) (0 where undefined); `average="macro"` (default) is their unweighted mean over
the labels seen in references or predictions (scikit-learn's f1_score definition), "micro" pools counts."""

import evaluate
import numpy as np

from pretrain.eval.metrics._base import paired_metric_info


class F1(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return paired_metric_info(
            "F1 score, macro-averaged over labels by default.",
            "predictions, references: integer labels; average: macro or micro",
            "int64",
        )

    def _compute(self, predictions, references, average: str = "macro") -> dict:
        pred, ref = np.asarray(predictions), np.asarray(references)
        labels = np.union1d(pred, ref)
        tp = np.array([np.sum((pred == k) & (ref == k)) for k in labels], dtype=float)
        fp = np.array([np.sum((pred == k) & (ref != k)) for k in labels], dtype=float)
        fn = np.array([np.sum((pred != k) & (ref == k)) for k in labels], dtype=float)
        if average == "micro":
            tp, fp, fn = tp.sum(keepdims=True), fp.sum(keepdims=True), fn.sum(keepdims=True)
        elif average != "macro":
            raise ValueError(f"average must be 'macro' or 'micro', got {average!r}")
        denominator = 2 * tp + fp + fn
        scores = np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)
        return {"f1": float(scores.mean())}
