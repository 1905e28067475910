"""Library messages go through ``logging`` (``ner_toolkit.*`` loggers): a library user silences or
redirects them; the commands keep printing them as one ``warning: ...`` / progress line on stderr."""
from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

from ner_toolkit.errors import one_line_logging
from ner_toolkit.training.reporting import read_metrics


def _torn_metrics(tmp_path: Path) -> Path:
    """A metrics.jsonl whose last line was cut mid-write: reading it warns (line 2) and drops the line."""
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps({"epoch": 1, "loss": 0.5}) + '\n{"epoch": 2, "lo', encoding="utf-8")
    return path


@pytest.fixture
def library_logging():
    """The ``ner_toolkit`` logger as a fresh process has it, restored after the test."""
    logger = logging.getLogger("ner_toolkit")
    saved = logger.level, logger.propagate, list(logger.handlers)
    yield logger
    logger.setLevel(saved[0])
    logger.propagate = saved[1]
    logger.handlers[:] = saved[2]


def test_the_command_line_shows_a_library_warning_as_one_line(tmp_path, capsys, library_logging) -> None:
    path = _torn_metrics(tmp_path)
    with one_line_logging():
        assert [r["epoch"] for r in read_metrics(path)] == [1]
    assert capsys.readouterr().err == (f"warning: {path}:2: dropping a torn last line (the run was stopped while "
                                       f"writing it)\n")


def _as_a_library_user(code: str, path: Path) -> str:
    """stderr of a fresh interpreter that runs ``code`` (Python's logging defaults, no CLI) and then reads
    the torn ``path``."""
    script = f"import logging\nfrom pathlib import Path\n{code}\nfrom ner_toolkit.training.reporting import " \
             f"read_metrics\nassert [r['epoch'] for r in read_metrics(Path({str(path)!r}))] == [1]\n"
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stderr


def test_a_library_user_silences_the_toolkit_with_logging(tmp_path) -> None:
    path = _torn_metrics(tmp_path)
    # Python's defaults: the warning shows (last-resort handler, the message alone)...
    assert _as_a_library_user("", path) == f"{path}:2: dropping a torn last line (the run was stopped while " \
                                           f"writing it)\n"
    # ...and the library user's logging silences it, the same result read.
    assert _as_a_library_user('logging.getLogger("ner_toolkit").setLevel(logging.ERROR)', path) == ""
    assert _as_a_library_user('logging.getLogger("ner_toolkit").addHandler(logging.NullHandler())', path) == ""


def test_a_warning_is_a_record_of_the_module_that_says_it(tmp_path, caplog, library_logging) -> None:
    path = _torn_metrics(tmp_path)
    with caplog.at_level(logging.WARNING, logger="ner_toolkit"):
        read_metrics(path)
    [record] = [r for r in caplog.records if "torn last line" in r.getMessage()]
    assert record.name == "ner_toolkit.training.reporting" and record.levelno == logging.WARNING
    assert record.funcName == "read_metrics"  # stacklevel: the caller of warn(), not warn() itself
    assert not record.getMessage().startswith("warning:")  # the prefix is the command's format


def test_progress_is_info_shown_by_the_commands_only(capsys, library_logging) -> None:
    """Under the commands' handler progress prints as its text, warnings and errors with their word."""
    log = logging.getLogger("ner_toolkit.training.trainer")
    with one_line_logging():
        log.info("epoch 1: loss 0.5000")
        log.warning("something to fix")
        log.error("what failed")
        log.debug("not shown")
    assert capsys.readouterr().err == "epoch 1: loss 0.5000\nwarning: something to fix\nerror: what failed\n"


def test_one_line_logging_restores_the_logger(library_logging) -> None:
    library_logging.setLevel(logging.WARNING)
    before = list(library_logging.handlers), library_logging.propagate
    with pytest.raises(RuntimeError):
        with one_line_logging():
            assert library_logging.level == logging.INFO and not library_logging.propagate
            raise RuntimeError("a command's failure")
    assert (list(library_logging.handlers), library_logging.propagate) == before
    assert library_logging.level == logging.WARNING
