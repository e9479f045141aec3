"""Tokenize raw text once into Megatron-format shards: `pretrain data tokenize --input PATH... --output DIR`.

Inputs are read as `pretrain data prepare` reads them (`prepare.io.load_inputs`: txt / jsonl / parquet,
compressed, directories, saved datasets, prepare's output, Hub ids), memory-mapped Arrow throughout.
Documents are encoded in chunks by `fast_encode.batch_encoder` (tiktoken's threads, or the Rust
tokenizer's, on all cores; `num_proc` > 1 adds worker processes for the Python-side reading), EOS is
appended to each, and they are written in order into shards of at least `shard_tokens` tokens: a shard
closes after the first document that reaches the target, so the cut depends on the data alone.

Resumable and atomic: a shard is published by `os.replace` (.bin, then .idx), a rerun keeps every
complete shard and continues after its documents, and `meta.json` is written last. The output is
byte-identical however often the run was interrupted.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import tempfile
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import datasets
import numpy as np
from tqdm.auto import tqdm

from pretrain.config import ConfigError
from pretrain.data.fast_encode import batch_encoder
from pretrain.data.outputs import check_output, mark_output_dir
from pretrain.data.shard_set import FORMAT, META_NAME, tokenizer_fingerprint
from pretrain.data.shards import IndexedShard, ShardInfo, ShardWriter, dtype_for_vocab
from pretrain.data.text import DataError
from pretrain.data.tokenizer import load_tokenizer
from pretrain.prepare.io import InputConfig, load_inputs

RUN_NAME = ".tokenize-run.json"
CHUNK_DOCUMENTS = 2000


def shard_name(k: int) -> str:
    return f"shard-{k:05d}"


def tokenize_to_shards(
    inputs: list[str],
    output: str | Path,
    tokenizer_dir: str,
    shard_tokens: int = 100_000_000,
    num_proc: int = 1,
    input_cfg: InputConfig | None = None,
    special_tokens_in_text: str = "parse",
    cache_dir: str | None = None,
    progress: bool = True,
    on_shard=None,
) -> dict:
    """Tokenize `inputs` into shards under `output`; returns the meta.json contents.

    `on_shard(info)` is called after each shard is published (progress hooks, kill tests)."""
    if shard_tokens < 1 or num_proc < 1:
        raise ConfigError(f"--shard-tokens ({shard_tokens}) and --num-proc ({num_proc}) must be >= 1")
    input_cfg = input_cfg or InputConfig()
    check_output(output, [*inputs, tokenizer_dir])
    tokenizer = load_tokenizer(tokenizer_dir)
    out = Path(output)
    identity = {
        "inputs": [str(Path(i).resolve()) if Path(i).exists() else i for i in inputs],
        "tokenizer_fingerprint": tokenizer_fingerprint(tokenizer, special_tokens_in_text),
        "shard_tokens": shard_tokens,
        "input_config": asdict(input_cfg),
    }
    if (out / META_NAME).is_file() and (finished := _claim_output(out, identity)) is not None:
        return finished
    with tempfile.TemporaryDirectory(prefix="pretrain-tokenize-") as scratch:
        ds = read_inputs(inputs, input_cfg, cache_dir or scratch)
        _claim_output(out, identity)
        _save_tokenizer(tokenizer, out / "tokenizer")
        return _write_shards(out, ds, tokenizer, identity, tokenizer_dir, shard_tokens, num_proc,
                             special_tokens_in_text, progress, on_shard)  # fmt: skip


def read_inputs(inputs: list[str], input_cfg: InputConfig, cache_dir: str) -> datasets.Dataset:
    """The inputs as one Arrow-backed `text` dataset; missing, unreadable or empty inputs are a DataError."""
    for given in inputs:  # a path that is not there would otherwise be tried as a Hub id
        looks_local = os.path.isabs(given) or given.startswith((".", "~")) or Path(given).suffix
        if looks_local and not os.path.exists(os.path.expanduser(given)):
            raise DataError(f"input {given} does not exist; check the path")
    try:
        ds = load_inputs(inputs, input_cfg, cache_dir)
    except ConfigError:
        raise
    except Exception as err:  # noqa: BLE001 - datasets raises many types for empty or malformed files
        if all(os.path.isfile(f) and not Path(f).read_bytes()[: 1 << 20].strip() for f in inputs):
            raise DataError(f"inputs {inputs} hold no documents; give files with text in them") from err
        raise DataError(
            f"could not read inputs {inputs} ({type(err).__name__}: {str(err)[:120]}); check that they exist, "
            "are in a supported format and hold text"
        ) from err
    if len(ds) == 0:
        raise DataError(f"inputs {inputs} hold no documents; give files with text in them")
    return ds


def _write_shards(
    out,
    ds,
    tokenizer,
    identity,
    tokenizer_dir,
    shard_tokens,
    num_proc,
    special_tokens_in_text,
    progress,
    on_shard,
) -> dict:
    """Encode every document not yet in a complete shard, publish shards in order, then meta.json."""
    dtype = dtype_for_vocab(len(tokenizer))
    done = _complete_shards(out)
    start_row = sum(info.documents for info in done)
    shards = list(done)
    writer, encoded = None, _encoded_documents(ds, tokenizer, special_tokens_in_text, start_row, num_proc)
    bar = tqdm(desc="tokenize", unit="tok", unit_scale=True, disable=not progress, dynamic_ncols=True)
    for ids in encoded:
        writer = writer or ShardWriter(out / shard_name(len(shards)), dtype)
        writer.add(ids)
        bar.update(len(ids))
        if writer.tokens >= shard_tokens:
            shards.append(writer.close())
            writer = None
            if on_shard:
                on_shard(shards[-1])
    if writer is not None:
        shards.append(writer.close())
    bar.close()
    if not shards:
        raise DataError(f"inputs {identity['inputs']} hold no documents; give files with text in them")
    meta = _meta(identity, tokenizer, tokenizer_dir, dtype, special_tokens_in_text, shards)
    (out / f".{META_NAME}.tmp").write_text(json.dumps(meta, indent=2))
    os.replace(out / f".{META_NAME}.tmp", out / META_NAME)
    (out / RUN_NAME).unlink()
    return meta


def _claim_output(out: Path, identity: dict) -> dict | None:
    """The finished meta when `out` already holds this exact run; else mark `out` as this run's.

    Refuses a directory holding anything else (a tool deletes only what it wrote itself)."""
    run_file, meta_file = out / RUN_NAME, out / META_NAME
    if meta_file.is_file():
        meta = json.loads(meta_file.read_text())
        if meta.get("run") == identity:
            return meta
        raise ConfigError(
            f"--output {out} already holds shards of another tokenize run (other inputs, tokenizer or "
            "--shard-tokens); choose a new --output directory"
        )
    if run_file.is_file():
        if json.loads(run_file.read_text()) != identity:
            raise ConfigError(
                f"--output {out} holds an interrupted tokenize run with other inputs, tokenizer or "
                "--shard-tokens; rerun that command or choose a new --output directory"
            )
        _remove_stale_temporaries(out)
        return None
    if out.exists() and any(out.iterdir()):
        raise ConfigError(
            f"--output {out} exists and is not a tokenize output; choose an empty or new directory"
        )
    mark_output_dir(out, "data tokenize")
    (out / f".{RUN_NAME}.tmp").write_text(json.dumps(identity, indent=2))
    os.replace(out / f".{RUN_NAME}.tmp", run_file)
    return None


def _remove_stale_temporaries(out: Path) -> None:
    """Temporary files and unpublished halves a killed run of ours left (names only we write)."""
    for path in out.glob(".shard-*.tmp*"):
        path.unlink()
    for path in out.glob("shard-*.bin"):
        if not path.with_suffix(".idx").is_file():
            path.unlink()


def _complete_shards(out: Path) -> list[ShardInfo]:
    """The consecutive complete shards from shard-00000 on (a shard is complete once its .idx exists)."""
    done = []
    while (out / f"{shard_name(len(done))}.idx").is_file():
        shard = IndexedShard(out / shard_name(len(done)))
        done.append(ShardInfo(shard.prefix.name, shard.num_sequences, shard.num_tokens, shard.max_token_id()))
    return done


def _save_tokenizer(tokenizer, path: Path) -> None:
    if (path / "tokenizer.json").is_file():
        return
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tokenizer.save_pretrained(str(tmp))
    os.replace(tmp, path)


def _encoded_documents(
    ds: datasets.Dataset, tokenizer, special_tokens_in_text: str, start_row: int, num_proc: int
) -> Iterator[np.ndarray]:
    """Each document's ids + EOS, in order, from row `start_row` on."""
    encode = batch_encoder(tokenizer, special_tokens_in_text)
    eos = tokenizer.eos_token_id
    chunks = [(i, min(i + CHUNK_DOCUMENTS, len(ds))) for i in range(start_row, len(ds), CHUNK_DOCUMENTS)]
    if num_proc == 1:
        results = (_encode_chunk(ds, encode, eos, chunk) for chunk in chunks)
        for ids in results:
            yield from ids
        return
    ctx = multiprocessing.get_context("spawn")  # the encoders run threads: fork could copy held locks
    with ctx.Pool(num_proc, initializer=_init_worker, initargs=(ds, encode, eos)) as pool:
        for ids in pool.imap(_worker_chunk, chunks):
            yield from ids


def _encode_chunk(ds: datasets.Dataset, encode, eos: int, chunk: tuple[int, int]) -> list[np.ndarray]:
    texts = ds[chunk[0] : chunk[1]]["text"]
    return [np.append(ids, np.int32(eos)).astype(np.int32) for ids in encode([t or "" for t in texts])]


_WORKER: tuple = ()


def _init_worker(ds: datasets.Dataset, encode, eos: int) -> None:
    global _WORKER
    _WORKER = (ds, encode, eos)


def _worker_chunk(chunk: tuple[int, int]) -> list[np.ndarray]:
    ds, encode, eos = _WORKER
    return _encode_chunk(ds, encode, eos, chunk)


def _meta(identity, tokenizer, tokenizer_dir, dtype, special_tokens_in_text, shards) -> dict:
    return {
        "format": FORMAT,
        "run": identity,
        "tokenizer": {
            "name": str(tokenizer_dir),
            "fingerprint": identity["tokenizer_fingerprint"],
            "vocab_size": len(tokenizer),
            "eos_token_id": tokenizer.eos_token_id,
        },
        "dtype": np.dtype(dtype).name,
        "eos": "appended to every document",
        "special_tokens_in_text": special_tokens_in_text,
        "inputs": identity["inputs"],
        "documents": sum(s.documents for s in shards),
        "tokens": sum(s.tokens for s in shards),
        "shards": [asdict(s) for s in shards],
    }
