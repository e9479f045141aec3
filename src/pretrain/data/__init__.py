"""Data for training: raw-text loading (`text`), the tokenizer (`tokenizer`, `fast_encode`), packing
into fixed-length blocks with document boundaries (`packing`) and the batch loaders (`loader`).

May import: config, settings. Nothing above it (objectives, train, eval, ...) is imported here.
"""
