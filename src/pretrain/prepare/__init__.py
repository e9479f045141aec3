"""Data preparation (`pretrain data prepare`): raw text in, clean `text` documents (JSONL
shards, or a `datasets` dataset) and a report out.

Stages (each a module, each switchable and reorderable through `pipeline.stages`): normalize,
exact_dedup, near_dedup (minhash), quality, langid, pii. `steps.py` wraps them as datatrove pipeline
steps, `stage_plan.py` cuts them into executor stages at each (global) dedup, `executors.py` runs those
on datatrove's local / Slurm / Ray executors (`shard_io.py`: input, shards, merged report);
`pipeline.py` runs them over a `datasets` dataset instead (`--executor datasets`); `cli.py` is
`pretrain data prepare`.

May import: config, settings. It knows nothing of tokenizers, objectives or training.
"""
