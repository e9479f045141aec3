"""Data at scale, two side-by-side measurements in one run.

1. Loader memory: peak RSS of a 20-step causal run (recipes/causal/train.py, default tiny GPT-2, 8 x 256
   tokens per step, final evaluation on a small validation shard set) on a 10M-token and on a 1B-token
   synthetic shard set (random uint16 ids, 1,024-token documents ending in EOS, written with numpy
   memmaps in chunks, cached under --work). Each run is its own process; its peak RSS comes from
   `os.wait4`. The training loop memory-maps the shards; the token-frequency count reads them with file
   reads (a mapped pass would put the whole 2 GB .bin into the process's RSS as page cache).
2. Tokenization speed: `pretrain data tokenize` (`tokenize_to_shards`, all cores: tiktoken threads, and
   with one worker process per core) against datatrove's `MegatronDocumentTokenizer` step
   (`JsonlReader` -> tokenizer, `LocalPipelineExecutor` with one task and worker per core) on the same
   jsonl files (wikitext-2 valid + test documents, repeated) and the same tokenizer, writing Megatron
   .bin/.idx shards. tokens/s = tokens written / wall time of the step (imports excluded), best of
   --repeats interleaved runs; both must write the same number of tokens.

    .venv/bin/python benchmarks/bench_data_scale.py [--work /tmp/pretrain-bench-data-scale] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from pretrain.data.shards import IndexedShard, dtype_for_vocab, index_bytes
from pretrain.data.text import _split_text_documents
from pretrain.prepare.tokenize import tokenize_to_shards
from pretrain.prepare.tokenize_cli import train_tokenizer

REPO = Path(__file__).resolve().parents[1]
# ../shared beside the checkout (a worktree one level deeper finds it one level up).
WIKITEXT = next(
    (
        p / "shared" / "data" / "wikitext-2"
        for p in REPO.parents
        if (p / "shared" / "data" / "wikitext-2").is_dir()
    ),
    REPO.parent / "shared" / "data" / "wikitext-2",
)
DOC_TOKENS = 1024
CHUNK_TOKENS = 1 << 24
ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "WANDB_MODE": "offline",
}


def synthetic_shard(prefix: Path, tokens: int, vocab: int, eos: int) -> Path:
    """A bare Megatron pair of `tokens` random ids in 5..vocab-1, documents of DOC_TOKENS ending in EOS."""
    if prefix.with_suffix(".idx").is_file():
        return prefix
    prefix.parent.mkdir(parents=True, exist_ok=True)
    dtype = dtype_for_vocab(vocab)
    docs = tokens // DOC_TOKENS
    tmp = prefix.with_name(prefix.name + ".bin.tmp")
    out = np.memmap(tmp, dtype, "w+", shape=(docs * DOC_TOKENS,))
    rng = np.random.default_rng(0)
    for start in range(0, len(out), CHUNK_TOKENS):
        stop = min(len(out), start + CHUNK_TOKENS)
        chunk = rng.integers(5, vocab, stop - start, dtype=np.int64).astype(dtype)
        chunk[DOC_TOKENS - 1 :: DOC_TOKENS] = (
            eos  # chunks are whole documents (CHUNK_TOKENS % DOC_TOKENS == 0)
        )
        out[start:stop] = chunk
    out.flush()
    del out
    os.replace(tmp, prefix.with_suffix(".bin"))
    prefix.with_suffix(".idx").write_bytes(index_bytes(np.full(docs, DOC_TOKENS, dtype=np.int32), dtype))
    return prefix


def peak_rss_of_run(shards: Path, valid: Path, tokenizer: Path, out: Path) -> tuple[float, float]:
    """(peak RSS in MB, wall seconds) of a 20-step causal run on `shards`, in a fresh process."""
    argv = [
        sys.executable,
        str(REPO / "recipes" / "causal" / "train.py"),
        f"--data.train_file={shards}",
        f"--data.validation_file={valid}",
        f"--model.tokenizer_name={tokenizer}",
        f"--train.output_dir={out}",
        "--train.overwrite_output_dir=true",
        "--train.max_steps=20",
        "--train.logging_steps=5",
        "--train.eval_steps=0",
    ]
    start = time.perf_counter()
    proc = subprocess.Popen(
        argv, env={**os.environ, **ENV}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"error: the run on {shards} failed: {proc.stderr.read().decode()[-2000:]}")
    return usage.ru_maxrss / 1024, seconds  # Linux: kilobytes


def memory_rows(work: Path, tokenizer: Path) -> None:
    from pretrain.data.tokenizer import load_tokenizer

    tok = load_tokenizer(str(tokenizer))
    vocab, eos = len(tok), tok.eos_token_id
    valid = synthetic_shard(work / "valid" / "valid", 64 * DOC_TOKENS, vocab, eos)
    print("| shard set | tokens | .bin size | peak RSS | wall |\n|---|---:|---:|---:|---:|")
    results = {}
    for label, tokens in (("10M", 10_000_000), ("1B", 1_000_000_000)):
        start = time.perf_counter()
        prefix = synthetic_shard(work / f"train-{label}" / "train", tokens, vocab, eos)
        written = time.perf_counter() - start
        shard = IndexedShard(prefix)
        rss, seconds = peak_rss_of_run(prefix.parent, valid.parent, tokenizer, work / f"run-{label}")
        results[label] = rss
        size = shard.bin_path.stat().st_size / 2**30
        print(f"| {label} | {shard.num_tokens:,} | {size:.2f} GiB | {rss:,.0f} MB | {seconds:.0f} s |"
              f"{f'  (written in {written:.0f} s)' if written > 1 else ''}", flush=True)  # fmt: skip
    print(f"\npeak RSS 1B / 10M: {results['1B'] / results['10M']:.3f} (goal: within 10 %)\n", flush=True)


def tokenize_inputs(work: Path, copies: int, files: int) -> list[Path]:
    """`files` jsonl files holding the wikitext-2 valid + test documents `copies` times, dealt round-robin."""
    docs = [
        d for name in ("valid.txt", "test.txt") for d in _split_text_documents((WIKITEXT / name).read_text())
    ]
    folder = work / "text"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    paths = [folder / f"part-{k}.jsonl" for k in range(files)]
    lines = [json.dumps({"text": d}) + "\n" for _ in range(copies) for d in docs]
    for k, path in enumerate(paths):
        path.write_text("".join(lines[k::files]))
    return paths


def run_ours(inputs: list[Path], tokenizer: Path, out: Path, num_proc: int) -> int:
    shutil.rmtree(out, ignore_errors=True)
    meta = tokenize_to_shards(
        [str(p) for p in inputs], out, str(tokenizer), num_proc=num_proc, progress=False
    )
    return sum(s["tokens"] for s in meta["shards"])


def run_datatrove(inputs: list[Path], tokenizer: Path, out: Path, workers: int) -> int:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.tokens.megatron_tokenizer import MegatronDocumentTokenizer

    shutil.rmtree(out, ignore_errors=True)
    pipeline = [
        JsonlReader(str(inputs[0].parent)),
        MegatronDocumentTokenizer(
            str(out / "shards"), tokenizer_name_or_path=str(tokenizer / "tokenizer.json"), eos_token="</s>"
        ),
    ]
    LocalPipelineExecutor(pipeline, tasks=len(inputs), workers=workers, logging_dir=str(out / "logs")).run()
    return sum(IndexedShard(idx.with_suffix("")).num_tokens for idx in (out / "shards").glob("*.idx"))


def speed_rows(work: Path, tokenizer: Path, repeats: int, copies: int) -> None:
    cores = len(os.sched_getaffinity(0))
    inputs = tokenize_inputs(work, copies, cores)
    mb = sum(p.stat().st_size for p in inputs) / 2**20
    runs = {
        "pretrain data tokenize (1 process, tiktoken threads)": lambda: run_ours(
            inputs, tokenizer, work / "ours", 1
        ),
        f"pretrain data tokenize (--num-proc {cores})": lambda: run_ours(
            inputs, tokenizer, work / "ours", cores
        ),
        f"datatrove MegatronDocumentTokenizer ({cores} tasks/workers)": lambda: run_datatrove(
            inputs, tokenizer, work / "datatrove", cores
        ),
    }
    best: dict[str, float] = {}
    tokens: dict[str, int] = {}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            tokens[name] = run()
            best[name] = min(best.get(name, float("inf")), time.perf_counter() - start)
    if len(set(tokens.values())) != 1:
        raise SystemExit(f"error: the tokenizers wrote different token counts: {tokens}")
    peer = next(name for name in runs if name.startswith("datatrove"))
    print(f"text: {mb:.1f} MB jsonl in {cores} files, {next(iter(tokens.values())):,} tokens; {cores} cores")
    print("| tokenizer step | seconds (best) | tokens/s | vs datatrove |\n|---|---:|---:|---:|")
    for name, seconds in best.items():
        rate = tokens[name] / seconds
        print(f"| {name} | {seconds:.2f} | {rate:,.0f} | {best[peer] / seconds:.2f}x |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/pretrain-bench-data-scale"))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--copies", type=int, default=4, help="times the wikitext-2 text is repeated")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-speed", action="store_true")
    args = parser.parse_args()
    tokenizer = args.work / "tokenizer"
    if not (tokenizer / "tokenizer.json").is_file():
        train_tokenizer([str(WIKITEXT / "valid.txt")], str(tokenizer), 8192, sample_bytes=2_000_000)
    if not args.skip_memory:
        memory_rows(args.work, tokenizer)
    if not args.skip_speed:
        speed_rows(args.work, tokenizer, args.repeats, args.copies)
    return 0


if __name__ == "__main__":
    sys.exit(main())
