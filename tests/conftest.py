"""Shared fixtures: offline Hugging Face, sliced sample data, and one tiny model trained once per session.

The tiny model is trained through the real command line (``python train.py`` in a subprocess), so the
pipeline tests see exactly what a user sees; every other test reuses its output directory.
"""
from __future__ import annotations

import os

# Before anything imports transformers: never touch the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tiny models gain nothing from intra-op threads, and on a busy 2-core machine OpenMP barriers make a
# 2,000-step LSTM take seconds instead of milliseconds. Subprocesses inherit this too.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import subprocess  # noqa: E402
import sys  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Optional, Sequence  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS") or 1)))

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample"

# A scratch ALBERT small enough that a training epoch over ~60 sentences takes well under a second.
TINY_SCRATCH = {"embedding_size": 16, "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                "intermediate_size": 64, "max_position_embeddings": 128}
TINY_SCRATCH_YAML = ("{embedding_size: 16, hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 2, "
                     "intermediate_size: 64, max_position_embeddings: 128}")
TOKENIZER = "builtin:albert-base-v2"


def tiny_config_text(train: Path, dev: Optional[Path] = None, test: Optional[Path] = None, output_dir: str = "unused",
                     epochs: int = 5) -> str:
    """A complete experiment config for a tiny model (YAML text)."""
    def quoted(p: Optional[Path]) -> str:
        return "null" if p is None else "'" + str(p) + "'"

    return f"""\
output_dir: '{output_dir}'
data:
  train: {quoted(train)}
  dev: {quoted(dev)}
  test: {quoted(test)}
model:
  encoder:
    scratch: {TINY_SCRATCH_YAML}
    tokenizer: {TOKENIZER}
  words: {{dim: 32}}
  fusion_dim: 32
  dropout: 0.2
  lstm: {{hidden_size: 32}}
training:
  epochs: {epochs}
  batch_size: 8
  eval_batch_size: 16
  seed: 7
  lr: {{encoder: 1.0e-3, words: 2.0e-2, lstm: 1.0e-2, crf: 5.0e-2}}
  patience: 0
  progress: false
"""


def slice_conll(src: Path, dst: Path, sentences: int) -> Path:
    """Copy the first ``sentences`` sentences of ``src`` (with the blank and -DOCSTART- lines among them)."""
    out, seen, in_sentence = [], 0, False
    for line in src.read_text(encoding="utf-8").splitlines(keepends=True):
        is_token = bool(line.strip()) and not line.startswith("-DOCSTART-")
        if in_sentence and not is_token:
            seen += 1
            if seen >= sentences:
                out.append(line)
                break
        in_sentence = is_token
        out.append(line)
    dst.write_text("".join(out), encoding="utf-8")
    return dst


def run_cli(script: str, args: Sequence[str], cwd: Path = REPO, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run ``python SCRIPT ARGS`` (train.py / predict.py) as a user would."""
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS") or "1")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, str(REPO / script), *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def assert_user_error(rc: int, stderr: str, *needles: str) -> str:
    """The CLI contract for user errors: exit 2, exactly one stderr line ``error: ...`` naming ``needles``."""
    assert rc == 2, f"exit code {rc}, stderr:\n{stderr}"
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected exactly one stderr line, got:\n{stderr}"
    assert lines[0].startswith("error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    return lines[0]


@dataclass
class Data:
    directory: Path
    train: Path   # ~60 sentences of data/sample/train.txt (IOB1, 4 columns, with -DOCSTART-)
    dev: Path     # ~30 sentences of dev.txt
    test: Path    # ~20 sentences of test.txt


@dataclass
class TrainedRun:
    config: Path
    output_dir: Path
    model_dir: Path
    stdout: str
    stderr: str
    returncode: int


@pytest.fixture(scope="session")
def sample_data(tmp_path_factory: pytest.TempPathFactory) -> Data:
    d = tmp_path_factory.mktemp("sample")
    return Data(d, slice_conll(SAMPLE / "train.txt", d / "train.txt", 60),
                slice_conll(SAMPLE / "dev.txt", d / "dev.txt", 30),
                slice_conll(SAMPLE / "test.txt", d / "test.txt", 20))


@pytest.fixture(scope="session")
def tiny_config(sample_data: Data) -> Path:
    """The tiny experiment config on the sliced sample (train + dev, no test)."""
    path = sample_data.directory / "tiny.yaml"
    path.write_text(tiny_config_text(sample_data.train, sample_data.dev, epochs=8), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def trained(tiny_config: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainedRun:
    """One tiny model trained once through ``python train.py`` (train + dev + test)."""
    out = tmp_path_factory.mktemp("run") / "out"
    data_dir = tiny_config.parent
    proc = run_cli("train.py", ["--config", tiny_config, "--set", f"data.test={data_dir / 'test.txt'}",
                                "--output-dir", out])
    assert proc.returncode == 0, proc.stderr
    return TrainedRun(tiny_config, out, out / "model", proc.stdout, proc.stderr, proc.returncode)


@pytest.fixture(scope="session")
def predictor(trained: TrainedRun):
    from ner_toolkit.predict import Predictor

    return Predictor.load(trained.model_dir)
