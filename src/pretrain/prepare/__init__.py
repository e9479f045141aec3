"""Data preparation (`pretrain data prepare`): raw text in, a clean `datasets` dataset with a `text`
column and a report out.

Stages (each a module, each switchable and reorderable through `pipeline.stages`): normalize,
exact_dedup, near_dedup (minhash), quality, langid, pii. `pipeline.py` runs them over a `datasets`
dataset; `cli.py` is `pretrain data prepare`.

May import: config, settings. It knows nothing of tokenizers, objectives or training.
"""
