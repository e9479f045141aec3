"""`make bench`: every benchmarks/bench_*.py in turn (or the ones named), each side by side with its peer.

Usage: python benchmarks/run_all.py [NAME ...]   e.g. `make bench ARGS="trainer masking"`
Each benchmark runs in its own Python process, so one cannot leave torch state (threads,
deterministic mode, allocator caches) that skews the next; a failing one is reported and the others
still run.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    names = (sys.argv[1:] if argv is None else argv) or sorted(
        p.stem[len("bench_") :] for p in HERE.glob("bench_*.py")
    )
    failures = []
    for name in names:
        path = HERE / f"bench_{name}.py"
        if not path.is_file():
            print(
                f"error: no benchmark {path.name}; choose from {sorted(p.stem[6:] for p in HERE.glob('bench_*.py'))}"
            )
            return 2
        print(f"\n=== {name} ===", flush=True)
        start = time.perf_counter()
        code = subprocess.run([sys.executable, str(path)], check=False).returncode
        print(
            f"=== {name}: {'ok' if code == 0 else 'FAILED'} in {time.perf_counter() - start:.0f} s ===",
            flush=True,
        )
        if code != 0:
            failures.append(name)
    if failures:
        print(f"failed benchmarks: {failures}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
