"""What the metric modules here share: the `MetricInfo` of a metric over paired predictions and references.

Each metric module is loaded by `evaluate.load(path)`, which copies that one file into its cache and
imports it from there; so the modules import this one by its absolute name, never relatively.
"""

from __future__ import annotations

import datasets
import evaluate


def paired_metric_info(description: str, inputs_description: str, dtype: str) -> evaluate.MetricInfo:
    """The info of a metric computed from `predictions` and `references` columns of `dtype` (e.g. int64)."""
    return evaluate.MetricInfo(
        description=description,
        citation="",
        inputs_description=inputs_description,
        features=datasets.Features(
            {"predictions": datasets.Value(dtype), "references": datasets.Value(dtype)}
        ),
    )
