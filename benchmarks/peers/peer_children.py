"""Measured child processes (wall, own peak RSS, CPU time, other processes' CPU time meanwhile), the scorer,
and the peers' own virtualenvs. Runs in the project's virtualenv (standard library)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
TORCH = "torch==2.13.0"  # first, alone: the CPU build from local disk (a bare torch requirement pulls CUDA)
FLAIR = "flair==0.15.1"


# ---------------------------------------------------------------------------------------------- children

@dataclass
class Child:
    """A finished child process: its wall seconds, its own peak RSS (os.wait4's ru_maxrss), its CPU seconds
    and the CPU seconds that other processes of the machine used meanwhile (they slow the child down)."""

    wall: float
    peak_rss_mb: float
    cpu_seconds: float
    foreign_cpu_seconds: float

    def record(self) -> dict[str, float]:
        share = self.foreign_cpu_seconds / max(self.wall * (os.cpu_count() or 1), 1e-9)
        return {"wall_seconds": round(self.wall, 2), "peak_rss_mb": round(self.peak_rss_mb),
                "cpu_seconds": round(self.cpu_seconds, 1), "foreign_cpu_seconds": round(self.foreign_cpu_seconds, 1),
                "foreign_cpu_share": round(share, 3)}


def busy_cpu_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot (/proc/stat; 0 where there is none)."""
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            fields = [int(v) for v in fh.readline().split()[1:]]
    except OSError:
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def child_env(threads: int) -> dict[str, str]:
    """The environment of every measured child: offline, the same thread count, no tokenizer threads."""
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    env.pop("VIRTUAL_ENV", None)
    env.pop("PYTHONPATH", None)
    return env


def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def run_child(command: Sequence[Any], log: Path, env: dict[str, str], max_rss_mb: float, cwd: Path = ROOT) -> Child:
    """Run one command to completion, its output to ``log``; exit with the log's tail when it fails, and kill
    it when its resident memory passes ``max_rss_mb`` (checked 4 times a second)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"  $ {' '.join(map(str, command))}", flush=True)
    with open(log, "w", encoding="utf-8") as fh:
        fh.write("$ " + " ".join(map(str, command)) + "\n")
        fh.flush()
        busy, started = busy_cpu_seconds(), time.perf_counter()
        proc = subprocess.Popen([str(c) for c in command], stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                stdin=subprocess.DEVNULL)
        killed = None
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)  # this child's own rusage once it has ended
            if pid:
                break
            rss = _rss_mb(proc.pid)
            if killed is None and rss > max_rss_mb:
                killed = rss
                proc.kill()
            time.sleep(0.25)
        wall = time.perf_counter() - started
        busy = busy_cpu_seconds() - busy
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
    if killed is not None:
        sys.exit(f"error: killed at {killed:,.0f} MB resident (--max-rss-mb {max_rss_mb:,.0f}) after {wall:.0f} s; "
                 f"the log: {log}")
    if proc.returncode != 0:
        tail = "".join(log.read_text(encoding="utf-8", errors="replace").splitlines(True)[-30:])
        sys.exit(f"{tail}\nerror: exit status {proc.returncode} after {wall:.0f} s; the whole log: {log}")
    cpu = usage.ru_utime + usage.ru_stime
    return Child(wall, usage.ru_maxrss / 1024, cpu, max(busy - cpu, 0.0))


def score(scorer: Path, predictions: Path) -> dict[str, float]:
    """Micro span P/R/F1 (percent) by ner-evaluate, conlleval-compatible."""
    json_path = predictions.with_suffix(".scores.json")
    subprocess.run([str(scorer), str(predictions), "--json", str(json_path)], check=True, stdout=subprocess.DEVNULL)
    micro = json.loads(json_path.read_text(encoding="utf-8"))["micro"]
    return {key: round(100 * micro[key], 2) for key in ("f1", "precision", "recall")}


# ------------------------------------------------------------------------------------------------ venvs

def main_python() -> Path:
    """The project's interpreter (its .venv when there is one)."""
    candidate = ROOT / ".venv" / "bin" / "python"
    return candidate if candidate.exists() else Path(sys.executable)


def main_package_version(name: str) -> str:
    out = subprocess.run([str(main_python()), "-c", f"import importlib.metadata as m; print(m.version({name!r}))"],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def peer_requirements(system: str) -> list[list[str]]:
    """pip install steps of a peer's virtualenv, in order (torch alone first)."""
    if system == "hf":
        return [[TORCH], [f"transformers=={main_package_version('transformers')}"]]
    return [[TORCH], [FLAIR, "gensim"]]


def ensure_venv(system: str, venvs: Path) -> dict[str, Any]:
    """The peer's virtualenv VENVS/<system>, created and installed once; returns its record
    (python path, install seconds, what pip installed)."""
    venv = venvs / system
    marker = venv / "installed.json"
    wanted = peer_requirements(system)
    if marker.exists():
        record = json.loads(marker.read_text(encoding="utf-8"))
        if record.get("requirements") == wanted:
            return record
        print(f"[{system}] {venv} was built for {record.get('requirements')}, now {wanted}: rebuilding", flush=True)
    if venv.exists():
        shutil.rmtree(venv)  # a half-built one from an interrupted run, or an outdated one
    print(f"[{system}] creating {venv}", flush=True)
    started = time.perf_counter()
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    steps = []
    for requirement in wanted:
        t0 = time.perf_counter()
        subprocess.run([str(python), "-m", "pip", "install", "-q", *requirement], check=True)
        steps.append({"pip install": " ".join(requirement), "seconds": round(time.perf_counter() - t0, 1)})
        print(f"[{system}] pip install {' '.join(requirement)}: {steps[-1]['seconds']:.0f} s", flush=True)
    freeze = subprocess.run([str(python), "-m", "pip", "freeze"], capture_output=True, text=True, check=True).stdout
    (venv / "freeze.txt").write_text(freeze, encoding="utf-8")
    record = {"python": str(python), "requirements": wanted,
              "install_seconds": round(time.perf_counter() - started, 1), "steps": steps,
              "packages": {line.split("==")[0].lower(): line.split("==")[1]
                           for line in freeze.splitlines() if "==" in line}}
    marker.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(f"[{system}] virtualenv ready in {record['install_seconds']:.0f} s", flush=True)
    return record
