"""Every optional extra missing: one ``error:`` line naming the extra to install (exit 2), for every command
that needs one, its ``--help`` and a real run, under ``ner NAME`` and its ``ner-NAME`` alias; never a
``ModuleNotFoundError`` traceback. The modules are hidden in a fresh interpreter (``sys.modules[m] = None``
makes ``import m`` raise), so the test runs whether or not the extras are installed here."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, assert_user_error
from ner_toolkit.errors import UserError
from ner_toolkit.extras import EXTRAS

# A command that loads a model or writes a directory: what its real run is given.
RUNS = {"serve": ["--model", "no-such-model", "--port", "0"],
        "export": ["--model", "no-such-model", "--output", "no-such-export"]}
HIDDEN = """\
import sys
for name in sys.argv[1].split(","):
    sys.modules[name] = None
from ner_toolkit.cli import command_main, main
command, how, args = sys.argv[2], sys.argv[3], sys.argv[4:]
sys.exit(main([command, *args]) if how == "ner" else command_main(command)(args))
"""


def run_hidden(tmp_path: Path, hidden: str, command: str, how: str, args: list[str]) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-c", HIDDEN, hidden, command, how, *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("how", ["ner", "alias"])
@pytest.mark.parametrize("args", ["--help", "run"])
@pytest.mark.parametrize("command,module", [(c, m) for c in RUNS for m in EXTRAS[c]])
def test_a_missing_extra_is_one_line_naming_it(tmp_path: Path, command: str, module: str, args: str,
                                               how: str) -> None:
    proc = run_hidden(tmp_path, module, command, how, ["--help"] if args == "--help" else RUNS[command])
    prog = f"ner {command}" if how == "ner" else f"ner-{command}"
    assert_user_error(proc.returncode, proc.stderr, prog, f"{module} is not installed",
                      f"pip install 'ner_toolkit[{command}]'")
    assert proc.stdout == ""


def test_the_commands_without_extras_keep_their_help(tmp_path: Path) -> None:
    """Hiding every extra changes nothing for the commands that need none."""
    everything = ",".join(m for modules in EXTRAS.values() for m in modules)
    for command in ("train", "predict", "evaluate", "select", "pretrain"):
        proc = run_hidden(tmp_path, everything, command, "ner", ["--help"])
        assert proc.returncode == 0 and proc.stdout.startswith("usage:"), (command, proc.stderr)


def test_tensorboard_missing_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from ner_toolkit.training.reporting import TensorBoardLog

    monkeypatch.setitem(sys.modules, "tensorboard", None)
    with pytest.raises(UserError, match=r"tensorboard is not installed\): pip install 'ner_toolkit\[tensorboard\]'"):
        TensorBoardLog(tmp_path / "tb", enabled=True)
    TensorBoardLog(tmp_path / "tb", enabled=False)  # not asked for: not needed


def test_the_onnx_runtime_missing_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from ner_toolkit.export.runtime import OnnxPredictor

    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(UserError, match=r"OnnxPredictor: needs the 'export' extra \(onnxruntime is not installed\)"):
        OnnxPredictor(tmp_path)


def test_every_extra_of_setup_cfg_is_known() -> None:
    """A new extra in setup.cfg is added to EXTRAS, so the same one-line check covers it."""
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    extras = set(cfg["options.extras_require"]) - {"test", "bench", "docs"}  # bench, docs: never imported by the toolkit
    assert extras == set(EXTRAS)
