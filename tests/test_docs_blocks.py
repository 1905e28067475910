"""The docs' command blocks run, and the generated references are complete.

A shell or Python block in README.md or docs/**/*.md is runnable when the line before its fence is
``<!-- runnable -->`` (an HTML comment: invisible on the site and on GitHub). Each page's runnable blocks run
in order, in one scratch directory holding copies of data/, configs/, train.py and predict.py, with ``ner``,
``ner-*`` and ``python`` on PATH running this checkout (``HF_HUB_OFFLINE=1``), so a later block sees what an
earlier one wrote and nothing lands in the tree. The quickstart tutorial runs first: its ``runs/quickstart``
is copied into every other page's directory, as a reader who did the quickstart has it.
"""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]
MARKER = "<!-- runnable -->"
LANGUAGES = {"bash": "bash", "sh": "bash", "python": "python"}
QUICKSTART = REPO / "docs" / "tutorials" / "quickstart.md"
PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
# Pages whose commands run on the shipped sample: each must keep runnable blocks (losing the marker, or a
# page moved, fails here instead of silently running nothing).
MUST_RUN = ("README.md", "docs/tutorials/quickstart.md", "docs/tutorials/own-data.md", "docs/how-to/training.md",
            "docs/how-to/predict-evaluate.md", "docs/how-to/raw-text.md", "docs/how-to/serve.md",
            "docs/how-to/export.md", "docs/how-to/precision.md", "docs/how-to/active-learning.md",
            "docs/how-to/calibration.md", "docs/how-to/partial-labels.md", "docs/how-to/pretraining.md",
            "docs/reference/python-api.md", "docs/threads.md", "docs/spacy.md")
BLOCK_TIMEOUT = 300


@dataclass(frozen=True)
class Block:
    page: Path
    line: int       # 1-based line of the block's first code line
    language: str   # bash | python
    code: str


def runnable_blocks(page: Path) -> list[Block]:
    """The page's blocks marked runnable, in order; a marker not followed by a bash/python fence, or a fence
    never closed, is a ValueError naming the line."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks = []
    for i, line in enumerate(lines):
        if line.strip() != MARKER:
            continue
        fence = re.fullmatch(r"(`{3,})\s*(\w+)\s*", lines[i + 1]) if i + 1 < len(lines) else None
        if fence is None or fence.group(2) not in LANGUAGES:
            raise ValueError(f"{page}:{i + 1}: {MARKER} must be followed by a ```bash or ```python fence")
        end = next((j for j in range(i + 2, len(lines)) if lines[j].strip() == fence.group(1)), None)
        if end is None:
            raise ValueError(f"{page}:{i + 2}: the runnable block's fence is never closed")
        blocks.append(Block(page, i + 3, LANGUAGES[fence.group(2)], "\n".join(lines[i + 2:end]) + "\n"))
    return blocks


def _markers(page: Path) -> int:
    """How many lines of the page are the marker (prose may name it inline)."""
    return sum(line.strip() == MARKER for line in page.read_text(encoding="utf-8").splitlines())


def _name(page: Path) -> str:
    return str(page.relative_to(REPO)) if page.is_relative_to(REPO) else str(page)


def make_workspace(root: Path) -> dict[str, str]:
    """A scratch copy of what the docs' commands read, and the environment that runs this checkout."""
    from ner_toolkit.cli import COMMANDS

    for name in ("data", "configs"):
        shutil.copytree(REPO / name, root / name)
    for name in ("train.py", "predict.py"):
        shutil.copy2(REPO / name, root / name)
    bin_dir = root / ".bin"
    bin_dir.mkdir()
    scripts = {"python": "", "ner": " -m ner_toolkit"}
    scripts.update({f"ner-{name}": f" -m ner_toolkit {name}" for name in COMMANDS})
    for script, args in scripts.items():
        (bin_dir / script).write_text(f'#!/bin/sh\nexec "{sys.executable}"{args} "$@"\n', encoding="utf-8")
        (bin_dir / script).chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", PYTHONPATH=str(REPO),
               HF_HUB_OFFLINE="1", MPLBACKEND="Agg")
    return env


def run_page(page: Path, root: Path, env: dict[str, str]) -> float:
    """Run the page's runnable blocks in order in ``root``; the seconds they took."""
    start = time.perf_counter()
    for n, block in enumerate(runnable_blocks(page)):
        script = root / f".block{n}.{'sh' if block.language == 'bash' else 'py'}"
        script.write_text(block.code, encoding="utf-8")
        command = ["bash", "-e", "-o", "pipefail", str(script)] if block.language == "bash" else [sys.executable, str(script)]
        done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=BLOCK_TIMEOUT,
                              stdin=subprocess.DEVNULL)
        assert done.returncode == 0, (f"{_name(page)}:{block.line}: the {block.language} block exited "
                                      f"{done.returncode}\n--- block\n{block.code}--- stdout\n{done.stdout[-3000:]}"
                                      f"--- stderr\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


# Running the pages is the heavy part (a few minutes of CPU: every block starts a fresh process): marked
# slow, so `-m "not slow"` skips it locally; the test command (CI) runs it.
@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("docs-quickstart")
    seconds = run_page(QUICKSTART, root, make_workspace(root))
    print(f"{_name(QUICKSTART)}: {seconds:.1f} s")
    return root


@pytest.mark.slow
def test_quickstart_tutorial_runs_and_leaves_its_model(quickstart_run: Path) -> None:
    assert (quickstart_run / "runs" / "quickstart" / "model" / "model.safetensors").is_file()
    assert (quickstart_run / "runs" / "quickstart" / "test.pred.txt").stat().st_size > 0


@pytest.mark.slow
@pytest.mark.parametrize("page", [p for p in PAGES if p != QUICKSTART and _markers(p)],
                         ids=_name)
def test_runnable_blocks_of_page(page: Path, quickstart_run: Path, tmp_path: Path) -> None:
    env = make_workspace(tmp_path)
    shutil.copytree(quickstart_run / "runs" / "quickstart", tmp_path / "runs" / "quickstart")
    seconds = run_page(page, tmp_path, env)
    print(f"{_name(page)}: {seconds:.1f} s")
    assert not (REPO / "mydata").exists() and not (REPO / "doccano").exists()  # nothing ran in the tree


@pytest.mark.parametrize("page", MUST_RUN)
def test_pages_that_run_on_the_sample_keep_runnable_blocks(page: str) -> None:
    assert runnable_blocks(REPO / page), f"{page}: no block marked {MARKER}"


def test_every_marker_opens_a_block() -> None:
    for page in PAGES:
        assert len(runnable_blocks(page)) == _markers(page), _name(page)


def test_marker_convention(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(f"text\n\n```bash\nnot marked\n```\n\n{MARKER}\n```bash\necho one\n```\n\n"
                    f"{MARKER}\n```python\nprint(2)\n```\n", encoding="utf-8")
    blocks = runnable_blocks(page)
    assert [(b.language, b.code, b.line) for b in blocks] == [("bash", "echo one\n", 9), ("python", "print(2)\n", 14)]
    page.write_text(f"{MARKER}\nsome text\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"page.md:1: .* must be followed by"):
        runnable_blocks(page)
    page.write_text(f"{MARKER}\n```yaml\na: 1\n```\n", encoding="utf-8")
    with pytest.raises(ValueError, match="must be followed by"):
        runnable_blocks(page)
    page.write_text(f"{MARKER}\n```bash\necho never closed\n", encoding="utf-8")
    with pytest.raises(ValueError, match="never closed"):
        runnable_blocks(page)


def test_a_failing_block_fails_with_its_page_and_line(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(f"{MARKER}\n```bash\ntrue\nner predict --model no/such/dir x.txt\necho after\n```\n",
                    encoding="utf-8")
    root = tmp_path / "ws"
    root.mkdir()
    with pytest.raises(AssertionError, match=r"page.md:3: the bash block exited 2"):
        run_page(page, root, make_workspace(root))


# --- generated references ----------------------------------------------------------------------------------

def _reference_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_reference", REPO / "docs_hooks" / "reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _leaves(keys: list[str]) -> list[str]:
    return [k for k in keys if not any(other.startswith(k + ".") for other in keys)]


def test_config_reference_lists_every_key_of_both_schemas() -> None:
    from ner_toolkit import schema
    from ner_toolkit.config import Config
    from ner_toolkit.pretraining.config import PretrainConfig

    page = _reference_module().config_markdown()
    experiment, pretraining = page.split("## Pretraining config", 1)
    for part, cls in ((experiment, Config), (pretraining, PretrainConfig)):
        leaves = _leaves(schema.all_keys(cls))
        assert len(leaves) > 20
        missing = [k for k in leaves if f"| `{k}` |" not in part]
        assert not missing, f"keys missing from the config reference: {missing}"
    assert "| `training.epochs` | `10` |" in experiment  # the default, read from the schema


def _section(page: str, title: str) -> str:
    """The part of the CLI page under the heading of ``title``, up to the next command's heading."""
    start = page.index(f" `{title}`\n")
    following = re.search(r"^#+ `ner ", page[start + 1:], re.M)
    return page[start:start + 1 + following.start()] if following else page[start:]


def test_cli_reference_lists_every_command_and_option() -> None:
    from ner_toolkit.cli import COMMANDS

    page = _reference_module().cli_markdown()
    invocations = [[name] for name in COMMANDS] + [["pretrain", "tokenizer"], ["pretrain", "train"]]
    for argv in invocations:
        done = subprocess.run([sys.executable, "-m", "ner_toolkit", *argv, "--help"], cwd=REPO, capture_output=True,
                              text=True, timeout=120, env=dict(os.environ, PYTHONPATH=str(REPO)))
        assert done.returncode == 0, done.stderr
        # argparse lists each option at the start of a line: "  --model MODEL", "  -h, --help"
        options = set(re.findall(r"^  (?:-\w(?: \S+)?, )?(--[a-z][a-z0-9-]*)", done.stdout, re.M)) - {"--help"}
        if argv != ["pretrain"]:
            assert options, f"ner {' '.join(argv)} --help lists no options"
        section = _section(page, "ner " + " ".join(argv))
        missing = sorted(o for o in options if f"`{o}`" not in section)
        assert not missing, f"ner {' '.join(argv)}: options missing from the CLI reference: {missing}"
