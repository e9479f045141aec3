"""Reading the pipeline's inputs (txt / jsonl / parquet files, saved datasets, Hub datasets) into one dataset.

Everything goes through `datasets`, which converts each input once to memory-mapped Arrow files in
`cache_dir`: the corpus is never held in RAM, so inputs larger than memory work.
"""

from __future__ import annotations

from pathlib import Path

import datasets

from pretrain.config import ConfigError
from pretrain.prepare.input_config import InputConfig, iter_txt_documents

__all__ = ["InputConfig", "iter_txt_documents", "load_inputs"]

_BUILDERS = {
    ".txt": "text", ".text": "text", ".md": "text", ".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"
}  # fmt: skip
_COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst", ".zstd")


def _builder(path: Path) -> str:
    suffixes = [s for s in path.suffixes if s not in _COMPRESSIONS]
    builder = _BUILDERS.get(suffixes[-1] if suffixes else "")
    if builder is None:
        raise ConfigError(
            f"input {path}: unsupported file type; use one of {sorted(_BUILDERS)} (optionally compressed)"
        )
    return builder


def _load_files(files: list[Path], cfg: InputConfig, cache_dir: str) -> datasets.Dataset:
    builder = _builder(files[0])
    if any(_builder(f) != builder for f in files):
        raise ConfigError(f"input files {files} mix formats; pass each format as its own --input")
    names = [str(f) for f in files]
    if builder == "text":
        kwargs = {"files": names, "sample_by": cfg.txt_sample_by}
        return datasets.Dataset.from_generator(iter_txt_documents, gen_kwargs=kwargs, cache_dir=cache_dir)
    return datasets.load_dataset(builder, data_files=names, split="train", cache_dir=cache_dir)


def _load_one(source: str, cfg: InputConfig, cache_dir: str) -> datasets.Dataset:
    path = Path(source)
    if path.is_file():
        return _load_files([path], cfg, cache_dir)
    if path.is_dir() and ((path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()):
        saved = datasets.load_from_disk(str(path))
        return saved[cfg.split] if isinstance(saved, datasets.DatasetDict) else saved
    if path.is_dir() and (path / "report.json").is_file() and list(path.glob("*.jsonl.gz")):
        return _load_files(sorted(path.glob("*.jsonl.gz")), cfg, cache_dir)  # `pretrain data prepare` output
    if path.is_dir():
        files = sorted(f for f in path.rglob("*") if f.is_file() and not f.name.startswith("."))
        if not files:
            raise ConfigError(f"input directory {path} has no files")
        return _load_files(files, cfg, cache_dir)
    name, _, config = source.partition(":")
    return datasets.load_dataset(name, config or None, split=cfg.split, cache_dir=cache_dir)


def load_inputs(sources: list[str], cfg: InputConfig, cache_dir: str) -> datasets.Dataset:
    """One dataset with a single `text` column: the documents of every source, in order.

    A source is a file (.txt, .jsonl, .json, .parquet, optionally compressed), a directory of such
    files, a `save_to_disk` directory, or else a Hub dataset id written `NAME` or `NAME:CONFIG`.
    """
    parts = []
    for source in sources:
        ds = _load_one(source, cfg, cache_dir)
        column = "text" if ds.column_names == ["text"] else cfg.text_column
        if column not in ds.column_names:
            raise ConfigError(
                f"input {source} has no column {column!r} (columns: {ds.column_names}); set --input.text_column"
            )
        ds = ds.select_columns([column])
        if column != "text":
            ds = ds.rename_column(column, "text")
        if ds.features["text"] != datasets.Value("string"):
            ds = ds.cast(datasets.Features({"text": datasets.Value("string")}))
        parts.append(ds)
    return datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]
