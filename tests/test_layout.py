"""The package layout: imports run one way (cli/runner -> train, hub -> eval, scaling, prepare ->
objectives -> data -> config/settings) and no two modules import each other, directly or around a
circle. Imports are read with `ast` (nothing is imported), including those inside functions and
`if TYPE_CHECKING:` blocks.
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

BASE = {"config", "settings"}
# What each top-level room may import besides itself.
ALLOWED: dict[str, set[str]] = {
    "config": set(),
    "settings": {"config"},
    "data": BASE,
    "objectives": {"data"} | BASE,
    # prepare's last stage (data tokenize, tokenizer train) writes data's shard format with data's encoder.
    "prepare": {"data"} | BASE,
    "eval": {"objectives", "data"} | BASE,
    "scaling": {"objectives", "data"} | BASE,
    "hub": BASE,
    "train": {"eval", "scaling", "objectives", "data"} | BASE,
    "runner": {"train", "hub", "eval", "scaling", "prepare", "objectives", "data"} | BASE,
    "cli": {"runner", "train", "hub", "eval", "scaling", "prepare", "objectives", "data"} | BASE,
}
TOP_LEVEL_MODULES = {"__init__", "cli", "config", "settings", "runner"}
MAX_LINES = 400


def module_names(src: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the `pretrain` package under `src`."""
    names = {}
    for path in sorted((src / "pretrain").rglob("*.py")):
        parts = path.relative_to(src).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        names[name] = path
    return names


def imported_modules(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """The `pretrain` modules that the file at `path` (module `name`) imports, anywhere in it."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            candidates = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for candidate in candidates:
            if candidate in modules and candidate != name:
                found.add(candidate)
                break
    return found


def room(module: str) -> str:
    """The top-level room of a module: `pretrain.train.trainer` -> `train`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def layout_violations(src: Path) -> list[str]:
    """Every import against the stated direction and every import circle, naming the files."""
    modules = module_names(src)
    graph = {name: imported_modules(path, name, modules) for name, path in modules.items()}
    problems = []
    for name, targets in graph.items():
        for target in sorted(targets):
            here, there = room(name), room(target)
            if here != there and here != "__init__" and there not in ALLOWED.get(here, set()):
                problems.append(f"{modules[name]} imports {modules[target]}: {here} may not import {there}")
    problems += [f"import circle: {modules[a]} <-> {modules[b]}" for a, b in find_circles(graph)]
    return problems


def find_circles(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """One (module, module it imports) pair for each circle: an edge inside a strongly connected set."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            components.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    circles = []
    for component in components:
        if len(component) > 1:
            first = min(component)
            circles.append((first, min(graph[first] & component)))
    return circles


def test_imports_run_one_way_without_circles():
    assert layout_violations(SRC) == []


def test_a_new_circle_is_reported_with_both_files(tmp_path):
    shutil.copytree(SRC / "pretrain", tmp_path / "pretrain")
    loader = tmp_path / "pretrain" / "data" / "loader.py"
    loader.write_text(loader.read_text() + "\nfrom pretrain.data.packing import token_stream\n")
    packing = tmp_path / "pretrain" / "data" / "packing.py"
    packing.write_text(packing.read_text() + "\nfrom pretrain.data.loader import TrainBatches\n")
    problems = layout_violations(tmp_path)
    assert any("circle" in p and "loader.py" in p and "packing.py" in p for p in problems), problems


def test_an_upward_import_is_reported(tmp_path):
    shutil.copytree(SRC / "pretrain", tmp_path / "pretrain")
    text = tmp_path / "pretrain" / "data" / "text.py"
    text.write_text(text.read_text() + "\nfrom pretrain.train.trainer import Trainer\n")
    problems = layout_violations(tmp_path)
    assert any("data/text.py imports" in p and "data may not import train" in p for p in problems), problems


def test_top_level_holds_only_the_entry_points_and_files_stay_short():
    top = {p.stem for p in (SRC / "pretrain").glob("*.py")}
    assert top == TOP_LEVEL_MODULES
    long = {
        str(p): n
        for p in (SRC / "pretrain").rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def test_every_room_says_what_it_holds_and_may_import():
    for init in (SRC / "pretrain").glob("*/__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert "May import" in doc, init
