"""`make bench`: every benchmarks/bench_*.py in turn (or the ones named), each side by side with its peer.

Usage: python benchmarks/run_all.py [NAME ...]   e.g. `make bench ARGS="trainer masking"`
Each module exposes main(argv) -> int; a failing benchmark is reported and the others still run.
"""

from __future__ import annotations

import importlib.util
import sys
import time
import traceback
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
        spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
        module = importlib.util.module_from_spec(spec)
        start = time.perf_counter()
        try:
            spec.loader.exec_module(module)
            code = module.main([])
        except Exception:  # noqa: BLE001 - one broken benchmark must not hide the others' figures
            traceback.print_exc()
            code = 1
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
