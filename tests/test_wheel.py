"""The built wheel: ``pip wheel`` of the checkout installs into a fresh venv (no network) with its console
scripts and package data, and the quickstart runs from the installed package in a directory that is not the
checkout. The fresh venv reads the heavy dependencies (torch, transformers) from this interpreter's
site-packages through a path line added after the install, which comes after its own site-packages and runs
none of that directory's ``.pth`` files, so an editable install of the checkout there never shadows the wheel.
"""
from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from conftest import REPO

SCRIPTS = ("ner", "ner-train", "ner-predict", "ner-evaluate", "ner-serve", "ner-export", "ner-select", "ner-pretrain")


def run(args: list, cwd: Path, env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{args}:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``pip wheel`` of a copy of the checkout (a build leaves build/ and egg-info beside its sources)."""
    pytest.importorskip("setuptools", reason="building the wheel needs setuptools (the test extra has it)")
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist", "runs", ".venv", ".git")
    shutil.copytree(REPO / "ner_toolkit", source / "ner_toolkit", ignore=ignore)
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "--no-index", "-q",
         "-w", tmp / "dist"], source, dict(os.environ, PIP_NO_INPUT="1"))
    [built] = (tmp / "dist").glob("ner_toolkit-*.whl")
    return built


def test_the_wheel_holds_the_package_data(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("ner_toolkit/resources/albert-base-v2/spiece.model",
                   "ner_toolkit/resources/albert-base-v2/tokenizer_config.json",
                   "ner_toolkit/model/crf/viterbi_native.c", "ner_toolkit/cli/__init__.py",
                   "ner_toolkit/schema/__init__.py", "ner_toolkit/serve/app.py", "ner_toolkit/api.py"):
        assert needed in names, needed
    assert not [n for n in names if n.startswith("tests/") or "__pycache__" in n]
    entry_points = configparser.ConfigParser()
    entry_points.read_string(zipfile.ZipFile(wheel).read(
        next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode())
    assert sorted(entry_points["console_scripts"]) == sorted(SCRIPTS)
    # spaCy's add_pipe("ner_toolkit") finds the component through this group of the installed package.
    assert entry_points["spacy_factories"]["ner_toolkit"] == "ner_toolkit.integrations.spacy:make_component"


def test_the_installed_wheel_runs_the_quickstart(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv], tmp_path, dict(os.environ))
    python, bin_dir = venv / "bin" / "python", venv / "bin"
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONNOUSERSITE="1", OMP_NUM_THREADS="1",
               NER_TOOLKIT_CACHE=str(tmp_path / "cache"))
    # This pip installs into the new venv, which sees nothing of this interpreter's packages yet.
    run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "-q", wheel],
        tmp_path, env)
    site = Path(run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path,
                    env).stdout.strip())
    (site / "zz_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")
    work = tmp_path / "work"  # not the checkout: configs and data are the user's files here
    shutil.copytree(REPO / "data" / "sample", work / "data" / "sample")
    shutil.copytree(REPO / "configs", work / "configs", ignore=shutil.ignore_patterns("*.json"))

    where = run([python, "-c", "import ner_toolkit, torch; print(ner_toolkit.__file__)"], work, env).stdout
    assert Path(where.strip()).is_relative_to(site), where
    for script in SCRIPTS:
        assert (bin_dir / script).is_file(), script
    assert "train" in run([bin_dir / "ner", "--help"], work, env).stdout
    run([bin_dir / "ner-train", "--config", "configs/quickstart.yaml", "--set", "training.epochs=1",
         "--set", "training.num_threads=1"], work, env)
    assert (work / "runs" / "quickstart" / "model" / "model.safetensors").is_file()
    run([bin_dir / "ner-predict", "--model", "runs/quickstart", "data/sample/test.txt",
         "--output", "runs/quickstart/test.pred.txt"], work, env)
    scores = run([bin_dir / "ner-evaluate", "runs/quickstart/test.pred.txt"], work, env).stdout
    assert "phrases: 309" in scores and "micro avg" in scores, scores  # every gold span of the sample counted
    train_again = subprocess.run([bin_dir / "ner", "train", "--config", "configs/quickstart.yaml"], cwd=work,
                                 env=env, capture_output=True, text=True, timeout=300)
    assert train_again.returncode == 2 and "--overwrite" in train_again.stderr


def test_no_source_names_one_machines_absolute_path() -> None:
    """Scripts and configs find shared data relative to the checkout (../shared), never at a path of the
    machine they were written on."""
    pattern = re.compile(r"""["'](/work/|/home/|/Users/|/root/)""")
    offenders = [str(path.relative_to(REPO)) for top in ("benchmarks", "ner_toolkit", "configs")
                 for path in (REPO / top).rglob("*") if path.suffix in (".py", ".yaml", ".sh")
                 and pattern.search(path.read_text(encoding="utf-8"))]
    assert offenders == []
