"""Raw text loading: the embedded default corpus, local files, saved datasets and Hub datasets.

Everything here returns `datasets.Dataset`s with one `text` column; tokenization and packing live in
pretrain.data.packing. The embedded corpus needs no network and no file from outside the project: it is
built from the running interpreter's own documentation, so every CPython can train out of the box.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import sys
from pathlib import Path

import datasets

from pretrain.settings import DataConfig

# Standard-library modules whose docstrings join pydoc's topic reference in the embedded corpus: a
# fixed list of long, side-effect-free docstrings, so the corpus is the same on every machine.
_DOCSTRING_MODULES = (
    "argparse",
    "ast",
    "asyncio",
    "bisect",
    "calendar",
    "cmd",
    "codecs",
    "collections",
    "contextlib",
    "copy",
    "csv",
    "dataclasses",
    "datetime",
    "decimal",
    "difflib",
    "doctest",
    "email",
    "enum",
    "fnmatch",
    "fractions",
    "functools",
    "getopt",
    "gettext",
    "heapq",
    "hmac",
    "html",
    "http",
    "inspect",
    "json",
    "locale",
    "logging",
    "mailbox",
    "numbers",
    "optparse",
    "pickle",
    "pickletools",
    "pprint",
    "pydoc",
    "queue",
    "random",
    "re",
    "sched",
    "shelve",
    "shlex",
    "smtplib",
    "socket",
    "statistics",
    "string",
    "struct",
    "subprocess",
    "tarfile",
    "textwrap",
    "threading",
    "timeit",
    "tokenize",
    "traceback",
    "typing",
    "unittest",
    "urllib",
    "uuid",
    "warnings",
    "weakref",
    "xml",
    "zipfile",
    "zoneinfo",
)


class DataError(ValueError):
    """Unusable input data; the message names the file and the fix."""


def cache_root(cfg: DataConfig) -> Path:
    """Directory for cached corpora and tokenized datasets."""
    root = cfg.cache_dir or os.environ.get("PRETRAIN_CACHE", str(Path.home() / ".cache" / "pretrain"))
    return Path(root)


def embedded_documents() -> list[str]:
    """Real English reference text shipped with CPython: pydoc topics, then stdlib module docstrings.

    Each pydoc topic is split at blank lines into paragraph groups of ~2 KB so the deterministic
    train/validation split has enough documents to be representative.
    """
    import pydoc_data.topics

    docs = []
    for name in sorted(pydoc_data.topics.topics):
        docs.extend(_chunk_paragraphs(pydoc_data.topics.topics[name]))
    for name in _DOCSTRING_MODULES:
        doc = _module_docstring(name)
        if doc and len(doc) > 200:
            docs.extend(_chunk_paragraphs(doc))
    return docs


def _module_docstring(name: str) -> str | None:
    try:
        return importlib.import_module(name).__doc__
    except Exception:  # noqa: BLE001 - some stdlib modules cannot import on every platform
        return None


def _chunk_paragraphs(text: str, target_chars: int = 2048) -> list[str]:
    chunks, current = [], ""
    for para in text.split("\n\n"):
        if current and len(current) + len(para) > target_chars:
            chunks.append(current.strip())
            current = ""
        current += para + "\n\n"
    if current.strip():
        chunks.append(current.strip())
    return chunks


def load_embedded_corpus(cfg: DataConfig) -> datasets.DatasetDict:
    """The default corpus, split deterministically (by document hash) and cached with `datasets`."""
    key = hashlib.sha256(sys.version.encode()).hexdigest()[:12]
    path = cache_root(cfg) / f"embedded-corpus-{key}-{cfg.validation_fraction}"
    if path.is_dir():
        return datasets.load_from_disk(str(path))
    docs = embedded_documents()
    split = datasets.DatasetDict(_split_by_hash(docs, cfg.validation_fraction))
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    split.save_to_disk(str(tmp))
    os.replace(tmp, path) if not path.exists() else None
    return datasets.load_from_disk(str(path))


def _split_by_hash(docs: list[str], fraction: float) -> dict[str, datasets.Dataset]:
    """Hold out documents whose content hash falls in the lowest `fraction`: stable under reordering."""

    def bucket(text: str) -> float:
        return int(hashlib.sha1(text.encode()).hexdigest()[:8], 16) / 16**8

    train = [d for d in docs if bucket(d) >= fraction]
    valid = [d for d in docs if bucket(d) < fraction]
    return {
        "train": datasets.Dataset.from_dict({"text": train}),
        "validation": datasets.Dataset.from_dict({"text": valid}),
    }


def load_text_file(path: str, text_column: str = "text") -> datasets.Dataset:
    """A local .txt (one document per blank-line-separated block), .jsonl/.json, .parquet, or saved dataset."""
    p = Path(path)
    if not p.exists():
        raise DataError(
            f"data file {path} does not exist; check the path given to --data.train_file/validation_file"
        )
    if p.is_dir() and (p / "report.json").is_file() and list(p.glob("*.jsonl.gz")):
        # `pretrain data prepare`'s datatrove output: <task>.jsonl.gz shards beside its report.
        ds = datasets.load_dataset("json", data_files=sorted(map(str, p.glob("*.jsonl.gz"))), split="train")
    elif p.is_dir():
        ds = _load_saved_dataset(p)
    else:
        ds = _load_file(p)
    if text_column not in ds.column_names:
        raise DataError(
            f"{path} has no column {text_column!r} (columns: {ds.column_names}); set --data.text_column"
        )
    ds = ds.select_columns([text_column]).rename_column(text_column, "text") if text_column != "text" else ds
    dtype = getattr(ds.features["text"], "dtype", None)
    if dtype not in ("string", "large_string", "null"):  # null: no document at all (reported below)
        raise DataError(
            f"{path}: column {text_column!r} holds {dtype or type(ds.features['text']).__name__}, not text; "
            "set --data.text_column to the column with the documents' text"
        )
    ds = ds.filter(lambda batch: [bool(t and t.strip()) for t in batch["text"]], batched=True)
    if len(ds) == 0:
        raise DataError(f"{path} holds no non-empty text; give a file with text in it")
    return ds


def _load_saved_dataset(p: Path) -> datasets.Dataset:
    try:
        ds = datasets.load_from_disk(str(p))
    except FileNotFoundError as err:
        raise DataError(
            f"{p} is a directory but not a saved dataset (datasets.save_to_disk); give a file or such a dir"
        ) from err
    if isinstance(ds, datasets.DatasetDict):
        if "train" not in ds:
            raise DataError(
                f"{p} is a DatasetDict without a 'train' split; save one split or name it 'train'"
            )
        ds = ds["train"]
    return ds


def _load_file(p: Path) -> datasets.Dataset:
    suffix = p.suffix.lower()
    if suffix in (".txt", ".text", ".md", ".raw", ""):
        return datasets.Dataset.from_dict({"text": _read_text_documents(p)})
    builder = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}.get(suffix)
    if builder is None:
        raise DataError(f"{p}: unsupported file type {suffix!r}; use .txt, .jsonl, .json, .parquet or .csv")
    try:
        return datasets.load_dataset(builder, data_files=str(p), split="train")
    except Exception as err:  # noqa: BLE001 - datasets raises many types for malformed files
        raise DataError(
            f"{p} could not be read as {builder} ({type(err).__name__}); check the file's format"
        ) from err


def _read_text_documents(p: Path) -> list[str]:
    try:
        raw = p.read_bytes()
    except OSError as err:
        raise DataError(f"{p} cannot be read ({err.strerror}); check its permissions") from err
    if b"\x00" in raw[:65536]:
        raise DataError(f"{p} looks binary (NUL bytes); give a UTF-8 text file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{p} is not valid UTF-8 (byte {err.start}); re-encode it as UTF-8") from err
    return _split_text_documents(text)


def _split_text_documents(text: str) -> list[str]:
    """Documents of a plain-text file: wikitext-style ' = Title = ' headings start a new document,
    otherwise each blank-line separated block is one. A BOM, CRLF/CR line endings and lines holding
    only whitespace split exactly as a clean LF file does."""
    lines = text.removeprefix("\ufeff").splitlines()
    if sum(1 for ln in lines if _is_wikitext_title(ln)) >= 2:
        docs, current = [], []
        for line in lines:
            if _is_wikitext_title(line) and current:
                docs.append("\n".join(current).strip())
                current = []
            current.append(line)
        docs.append("\n".join(current).strip())
        return [d for d in docs if d]
    docs, current = [], []
    for line in [*lines, ""]:
        if line.strip():
            current.append(line)
        elif current:
            docs.append("\n".join(current).strip())
            current = []
    return docs


def _is_wikitext_title(line: str) -> bool:
    s = line.strip()
    return s.startswith("= ") and s.endswith(" =") and not s.startswith("= =")


def load_hub_dataset(cfg: DataConfig, split: str) -> datasets.Dataset | datasets.IterableDataset:
    """A split of a Hub dataset through `datasets.load_dataset`; offline it fails with a clear message."""
    try:
        return datasets.load_dataset(
            cfg.dataset_name,
            cfg.dataset_config_name or None,
            split=split,
            streaming=cfg.streaming and split == "train",
        )
    except Exception as err:  # noqa: BLE001 - network, auth and missing-split errors all end here
        raise DataError(
            f"could not load Hub dataset {cfg.dataset_name!r} split {split!r} ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:160]}); check the name and network, or use --data.train_file"
        ) from err


def _materialize_stream(stream: datasets.IterableDataset, limit: int) -> datasets.Dataset:
    """The first `limit` documents of a streamed split, without downloading the rest of it."""
    if limit <= 0:
        raise DataError("data.streaming=true reads a bounded prefix: set --data.max_train_documents=N")
    texts = [row["text"] for row in stream.take(limit)]
    return datasets.Dataset.from_dict({"text": texts})


def load_raw_datasets(cfg: DataConfig) -> tuple[datasets.Dataset, datasets.Dataset]:
    """(train, validation) text datasets from the configured source."""
    if cfg.train_file:
        train = load_text_file(cfg.train_file, cfg.text_column)
        valid = load_text_file(cfg.validation_file, cfg.text_column) if cfg.validation_file else None
    elif cfg.dataset_name:
        train = load_hub_dataset(cfg, "train")
        valid = load_hub_dataset(cfg, "validation") if not cfg.validation_file else None
        if cfg.validation_file:
            valid = load_text_file(cfg.validation_file, cfg.text_column)
        if cfg.text_column != "text":
            train, valid = (
                train.rename_column(cfg.text_column, "text"),
                valid.rename_column(cfg.text_column, "text"),
            )
    else:
        corpus = load_embedded_corpus(cfg)
        train, valid = corpus["train"], corpus["validation"]
        if cfg.validation_file:
            valid = load_text_file(cfg.validation_file, cfg.text_column)
    if valid is None:
        split = _split_by_hash(list(train["text"]), cfg.validation_fraction)
        train, valid = split["train"], split["validation"]
    if isinstance(train, datasets.IterableDataset):
        train = _materialize_stream(train, cfg.max_train_documents)
    elif cfg.max_train_documents:
        train = train.select(range(min(cfg.max_train_documents, len(train))))
    if isinstance(train, datasets.Dataset) and len(train) == 0:
        raise DataError("the training set is empty; point --data.train_file at a file with text")
    if len(valid) == 0:
        raise DataError(
            "the validation set is empty; set --data.validation_file or raise --data.validation_fraction"
        )
    return train, valid
