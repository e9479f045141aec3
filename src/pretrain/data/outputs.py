"""Output directories every tool writes: a tool deletes or replaces only what it wrote itself.

Each tool that writes a directory (train, data prepare, data tokenize, tokenizer train, the scaling
sweep) marks it with a `.pretrain-output` file naming the tool. Before writing, `check_output` refuses
an output that equals, lies inside or contains one of the run's inputs, and `claim_output_dir`
refuses to write into (or replace) a non-empty directory that carries no marker of that tool. Older
outputs written before the marker existed are recognised by files only that tool writes (`legacy`).

This sits in `data`, the lowest room every writing tool may import.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from pretrain.config import ConfigError

MARKER = ".pretrain-output"


def _resolved(path: str | Path) -> Path:
    """The absolute path with symbolic links followed: a link to the input is the input."""
    return Path(os.path.realpath(os.path.expanduser(str(path))))


def check_output(output: str | Path, inputs: Iterable[str | Path], what: str = "--output") -> Path:
    """`output` as an absolute path, refused when empty or when it overlaps an existing input path.

    Overlap: the output equals an input, contains it (so replacing the output would delete it), or
    lies inside an input directory (so the next run would read its own output)."""
    if not str(output).strip():
        raise ConfigError(f"{what} is empty; give the directory to write, e.g. runs/my-run")
    link = Path(os.path.expanduser(str(output)))
    if link.is_symlink() and not link.exists():  # e.g. a link to a scratch disk that is not mounted
        raise ConfigError(
            f"{what}={output} is a symbolic link to {os.readlink(link)}, which does not exist; create that "
            "directory (or mount its disk) or remove the link"
        )
    out = _resolved(output)
    for given in inputs:
        if not str(given).strip() or not os.path.exists(os.path.expanduser(str(given))):
            continue  # Hub ids and unset paths cannot overlap a local directory
        inp = _resolved(given)
        if out == inp or out in inp.parents:
            raise ConfigError(
                f"{what}={output} {'is' if out == inp else 'contains'} the input {given}; writing there would "
                "overwrite or delete the input: choose an output directory outside the inputs"
            )
        if inp in out.parents and inp.is_dir():
            raise ConfigError(
                f"{what}={output} lies inside the input directory {given}; choose an output directory "
                "outside the inputs"
            )
    return out


def is_our_output(path: str | Path, tool: str, legacy: Iterable[str] = ()) -> bool:
    """True when `path` carries `tool`'s marker (or, written before markers, one of `legacy`'s files)."""
    path = Path(path)
    marker = path / MARKER
    if marker.is_file():
        try:
            return json.loads(marker.read_text()).get("tool") == tool
        except (ValueError, AttributeError, OSError):
            return False
    return any((path / name).exists() for name in legacy)


def mark_output_dir(path: str | Path, tool: str) -> None:
    """Write `tool`'s marker into the directory `path` (created when missing)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / MARKER).write_text(json.dumps({"tool": tool}) + "\n")


def claim_output_dir(
    output: str | Path,
    tool: str,
    inputs: Iterable[str | Path] = (),
    legacy: Iterable[str] = (),
    what: str = "--output",
    create: bool = True,
) -> bool:
    """Check `output` for `tool` and (with `create`) create and mark it; True when it already held
    an output of `tool`. A non-empty directory without the marker, or a file, is refused: nothing
    is ever deleted or written into there."""
    path = check_output(output, inputs, what)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{what}={output} is a file, not a directory; choose a directory path")
    ours = path.is_dir() and is_our_output(path, tool, legacy)
    if path.is_dir() and not ours and any(path.iterdir()):
        raise ConfigError(
            f"{what}={output} is a non-empty directory that pretrain {tool} did not write (no {MARKER} "
            "marker); nothing was changed there: choose a new or empty directory"
        )
    if create:
        mark_output_dir(path, tool)
    return ours


def remove_unused_output_dir(path: str | Path) -> None:
    """Remove `path` when it holds nothing but our marker: a run that failed before writing anything
    leaves no empty output behind (called only for a directory this run created)."""
    path = Path(path)
    try:
        if path.is_dir() and not path.is_symlink() and [p.name for p in path.iterdir()] == [MARKER]:
            (path / MARKER).unlink()
            path.rmdir()
    except OSError:  # another rank removed it first, or a file appeared: leave it
        pass
