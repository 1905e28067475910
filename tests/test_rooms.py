"""The rooms of the house hold what they say (DESIGN.md): training imports nothing from prediction, the
toolkit never imports pytorch-crf (a test and benchmark reference, not a dependency), no module grows
past 400 lines. Read from the source (every import, also those inside functions), not by importing."""
from __future__ import annotations

import ast
import configparser
from pathlib import Path

import pytest
from conftest import REPO

PACKAGE = REPO / "ner_toolkit"
PREDICTION = ("ner_toolkit.predict", "ner_toolkit.streaming", "ner_toolkit.serve")


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, relative imports resolved (``from .x import y`` counts ``.x`` and
    ``.x.y``: y may be a module)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _within(module: str, rooms: tuple[str, ...]) -> bool:
    return any(module == room or module.startswith(room + ".") for room in rooms)


def test_training_imports_nothing_from_prediction() -> None:
    arrows = {(_module_name(p), m) for p in (PACKAGE / "training").rglob("*.py") for m in _imports(p)
              if _within(m, PREDICTION)}
    assert not arrows, sorted(arrows)


def test_training_reaches_no_prediction_module_through_others() -> None:
    """Transitively too: what training imports (the model, data, evaluation) does not import prediction."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    seen, todo = set(), [m for m in modules if m.startswith("ner_toolkit.training")]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        todo += [m for m in _imports(modules[current]) if m in modules and not _within(m, PREDICTION)]
    reached = {(m, i) for m in seen for i in _imports(modules[m]) if _within(i, PREDICTION)}
    assert not reached, sorted(reached)


def test_the_toolkit_never_imports_pytorch_crf() -> None:
    users = [str(p.relative_to(REPO)) for p in PACKAGE.rglob("*.py") if _within_any(_imports(p), "torchcrf")]
    assert not users


def _within_any(modules: set[str], room: str) -> bool:
    return any(_within(m, (room,)) for m in modules)


def test_pytorch_crf_is_a_test_and_bench_extra_not_a_dependency() -> None:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg", encoding="utf-8")

    def names(text: str) -> set[str]:
        return {line.split(">")[0].split("=")[0].split(";")[0].strip() for line in text.splitlines()
                if line.strip() and not line.strip().startswith("#")}

    assert "pytorch-crf" not in names(cfg["options"]["install_requires"])
    extras = cfg["options.extras_require"]
    assert "pytorch-crf" in names(extras["test"]) and "pytorch-crf" in names(extras["bench"])


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_grows_past_400_lines(path: Path) -> None:
    assert len(path.read_text(encoding="utf-8").splitlines()) <= 400
