"""Side by side: ner_toolkit against HuggingFace token classification and Flair, on the same encoder, the same
data and the same epochs (issue 27, part 5). Prints one markdown table.

    python benchmarks/peers/bench_peers.py                      # full protocol: hours on 2 cores
    python benchmarks/peers/bench_peers.py --train-sentences 5000   # every system on the first 5,000
    python benchmarks/peers/bench_peers.py --train-sentences 200 --test-sentences 100 --dev-sentences 100 \\
        --epochs 1 --out runs/peers-smoke                       # smoke test, minutes
    python benchmarks/peers/bench_peers.py --table              # print the table again from the JSONs

Run it with the project's virtualenv (``. .venv/bin/activate``): ner_toolkit trains there, and every system's
test predictions are scored there by the same scorer (``ner-evaluate``, conlleval-compatible micro span F1).
Each peer gets its own virtualenv under OUT/venvs/ (or ``--venvs DIR``), created on first use and reused
afterwards; nothing is installed into the project's .venv. Everything loads from local directories: the children
run with HF_HUB_OFFLINE=1 and TRANSFORMERS_OFFLINE=1, and the peers' helper scripts make any IP connection raise.

The systems (all on ../shared/models/all-MiniLM-L6-v2 and CoNLL-2003 from ../shared/datasets/conll2003):

* ours:  ``train.py --config configs/conll03_minilm.yaml`` (MiniLM + GloVe 50-d + char CNN -> BiLSTM -> CRF,
  the config's own rates and precision; the model kept is its best epoch on dev), then
  ``predict.py --precision bf16`` (or ``--ours-quantize int8``) on the test file.
* hf:    ``AutoModelForTokenClassification`` on the MiniLM directory, the run_ner recipe as a plain loop
  (hf_token_classification.py): softmax head, labels on each word's first subword, AdamW 5e-5, linear decay
  after 10 % warmup, batch 32, weight decay 0, gradient clipping 1.0; the model kept is the last epoch's.
* flair: ``SequenceTagger`` over ``StackedEmbeddings([TransformerWordEmbeddings(MiniLM, layers="-1",
  subtoken_pooling="first", fine_tune=True), WordEmbeddings(the same GloVe file)])``, BiLSTM 256 + CRF,
  ``ModelTrainer.fine_tune`` (AdamW 5e-5 for every parameter, linear schedule after 10 % warmup, batch 32)
  (flair_tagger.py); the model kept is the last epoch's.

Data: the first N training sentences (``--train-sentences``, default all 14,041; -DOCSTART- lines are not
sentences) for every system alike, for the same number of epochs (``--epochs``, default: ours' config's), and
the same dev and test sentences (``--dev-sentences``, ``--test-sentences``: the first N, default all). ours
reads them in the original IOB1 layout (with the -DOCSTART- lines before them); the peers read ``token tag``
files with the same sentences in IOB2 (the run_ner and Flair convention). Every system's test predictions end
up as OUT/<system>/test.pred.conll, ``token gold pred`` with the gold in IOB2 (ours' IOB1 output is rewritten
to IOB2: the same spans; the peers' tags are left as predicted, so an ill-formed ``O I-PER`` counts as
conlleval counts it).

What is measured (one process at a time, never two systems at once):

* test F1 / dev F1: ``ner-evaluate`` micro span F1 (conlleval reading) of the test / dev predictions.
  ours' dev F1 is its best epoch's (the epoch it keeps); the peers' is their last epoch's.
* training sentences/s: training sentences x epochs / seconds in the epochs' batch loops only (no start-up,
  data preparation, dev scoring or saving): ours from the per-epoch ``seconds`` of OUT/ours/metrics.jsonl,
  the peers from a timer around their batch loops (hf: its loop; flair: a trainer plugin timing each epoch
  from ``before_training_epoch`` to ``after_training_epoch``).
* prediction sentences/s: test sentences / seconds of tagging, model load and start-up excluded, batches of
  ``--predict-batch-size`` (64, predict.py's default) sentences. ours: predict.py does not report its
  timing, so it is the wall of ``predict.py`` on the test file minus the wall of the same command on a file
  holding only the first test sentence (the faster of two such load-only runs, after which the model files
  are in the page cache for the full run too); this counts reading and writing the CoNLL files. The peers:
  a timer in the helper from token lists in memory to tag lists in memory (sentences sorted by length into
  batches, as ours and Flair do).
* peak RSS: ``ru_maxrss`` of the training process from ``os.wait4`` on that one child (the same for all
  three; it covers the whole process: start-up, data, training, dev scoring, saving).
* wall: the training process's wall plus the prediction process's (ours: the full predict.py run).
* noise: the CPU time other processes of the machine used during each measured child (/proc/stat's busy time
  less the child's own rusage) is kept in the JSON; a system for which it passes 5 % of the machine's CPU time
  is flagged under the table, since its speeds are then too low. A child whose resident memory passes
  ``--max-rss-mb`` is killed (and the benchmark stops).

Threads: ``--threads`` (default 2) torch threads in every process (ours: ``training.num_threads`` and
OMP_NUM_THREADS; the peers: ``torch.set_num_threads`` and OMP_NUM_THREADS). Precision: ours trains as its
config says and predicts bf16 (or int8); the peers train and predict in float32, their default.

Results: OUT/results/<system>.json (a system whose JSON exists for the same settings is skipped; ``--force``
runs it again); logs of every child in OUT/<system>/logs/.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SYSTEMS = ("ours", "hf", "flair")
TORCH = "torch==2.13.0"  # first, alone: the CPU build from local disk (a bare torch requirement pulls CUDA)
FLAIR = "flair==0.15.1"
BUSY_SHARE = 0.05  # other processes' share of the CPUs during a measured run above which its speeds are flagged
TABLE_HEADER = ("| system | test F1 | dev F1 | training sentences/s | prediction sentences/s "
                "| peak RSS training (MB) | wall |")


# ----------------------------------------------------------------------------------------------- data

@dataclass
class Block:
    """One sentence of a CoNLL file (its raw lines) with the -DOCSTART- lines that came right before it."""

    prefix: list[str]
    lines: list[str]

    @property
    def tokens(self) -> list[str]:
        return [line.split()[0] for line in self.lines]

    @property
    def tags(self) -> list[str]:
        return [line.split()[-1] for line in self.lines]


def read_blocks(path: Path) -> list[Block]:
    """The sentences of an original CoNLL-2003 file, in order."""
    blocks: list[Block] = []
    prefix: list[str] = []
    lines: list[str] = []
    with open(path, encoding="utf-8") as fh:
        for raw in fh:
            line = raw.rstrip("\n")
            if not line.strip():
                if lines:
                    blocks.append(Block(prefix, lines))
                    prefix, lines = [], []
            elif line.startswith("-DOCSTART-"):
                prefix.append(line)
            else:
                lines.append(line)
    if lines:
        blocks.append(Block(prefix, lines))
    return blocks


def to_iob2(tags: Sequence[str]) -> list[str]:
    """Tags read as conlleval reads them (an I-X after O or after another type starts a span; B-X always
    does), written in IOB2. Lossless for IOB1 and IOB2; for ill-formed input it keeps conlleval's spans."""
    out: list[str] = []
    previous = "O"
    for tag in tags:
        if tag == "O":
            out.append(tag)
        else:
            prefix, type_ = tag.split("-", 1)
            starts = prefix == "B" or previous == "O" or previous.split("-", 1)[1] != type_
            out.append(("B-" if starts else "I-") + type_)
        previous = tag
    return out


def write_original(path: Path, blocks: Sequence[Block]) -> None:
    """The sentences in the original layout (all columns, IOB1, -DOCSTART- lines kept): ours' input."""
    with open(path, "w", encoding="utf-8") as fh:
        for block in blocks:
            for line in block.prefix:
                fh.write(line + "\n\n")
            fh.write("\n".join(block.lines) + "\n\n")


def write_token_tag(path: Path, blocks: Sequence[Block]) -> None:
    """``token tag`` in IOB2, one blank line after each sentence: the peers' input."""
    with open(path, "w", encoding="utf-8") as fh:
        for block in blocks:
            for token, tag in zip(block.tokens, to_iob2(block.tags)):
                fh.write(f"{token} {tag}\n")
            fh.write("\n")


@dataclass
class Data:
    ours: dict[str, Path]    # train/dev/test/first in the original layout
    peers: dict[str, Path]   # train/dev/test as token tag (IOB2)
    counts: dict[str, int]   # sentences per split


def prepare_data(source: Path, out: Path, limits: dict[str, Optional[int]], write: bool = True) -> Data:
    """The benchmark's splits, written into OUT/data when ``write`` (deterministic: rewritten on every run)."""
    ours_dir, peers_dir = out / "data" / "ours", out / "data" / "peers"
    if write:
        ours_dir.mkdir(parents=True, exist_ok=True)
        peers_dir.mkdir(parents=True, exist_ok=True)
    data = Data({}, {}, {})
    for split in ("train", "dev", "test"):
        blocks = read_blocks(source / f"{split}.txt")
        limit = limits[split]
        if limit is not None:
            if limit < 1:
                sys.exit(f"error: --{split}-sentences must be at least 1")
            blocks = blocks[:limit]
        data.counts[split] = len(blocks)
        data.ours[split], data.peers[split] = ours_dir / f"{split}.txt", peers_dir / f"{split}.txt"
        if split == "test":
            data.ours["first"] = ours_dir / "test_first_sentence.txt"
        if write:
            write_original(data.ours[split], blocks)
            write_token_tag(data.peers[split], blocks)
            if split == "test":
                write_original(data.ours["first"], blocks[:1])
    return data


def read_columns(path: Path) -> list[list[list[str]]]:
    """The token lines of a CoNLL file, split into columns, per sentence (-DOCSTART- lines left out)."""
    sentences: list[list[list[str]]] = []
    current: list[list[str]] = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            parts = line.split()
            if not parts or parts[0] == "-DOCSTART-":
                if current:
                    sentences.append(current)
                    current = []
                continue
            current.append(parts)
    if current:
        sentences.append(current)
    return sentences


def write_scored_file(source: Path, target: Path, gold_file: Path) -> None:
    """ours' predict.py output (the original columns + its IOB1 prediction) as ``token gold pred`` in IOB2,
    the gold taken from the peers' file after checking that every token is the same."""
    predicted, gold = read_columns(source), read_columns(gold_file)
    if len(predicted) != len(gold):
        raise SystemExit(f"error: {source} holds {len(predicted)} sentences, {gold_file} {len(gold)}")
    with open(target, "w", encoding="utf-8") as fh:
        for pred_rows, gold_rows in zip(predicted, gold):
            if [r[0] for r in pred_rows] != [r[0] for r in gold_rows]:
                raise SystemExit(f"error: {source}: the tokens differ from {gold_file}'s near "
                                 f"{' '.join(r[0] for r in gold_rows[:8])}")
            for row, gold_row, tag in zip(pred_rows, gold_rows, to_iob2([r[-1] for r in pred_rows])):
                fh.write(f"{row[0]} {gold_row[-1]} {tag}\n")
            fh.write("\n")


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


# ---------------------------------------------------------------------------------------------- systems

@dataclass
class Settings:
    args: argparse.Namespace
    data: Data
    out: Path

    def common(self) -> dict[str, Any]:
        """What every system's result must share to sit in one table."""
        a = self.args
        return {"train_sentences": self.data.counts["train"], "dev_sentences": self.data.counts["dev"],
                "test_sentences": self.data.counts["test"], "epochs": a.epochs, "seed": a.seed, "threads": a.threads,
                "encoder": str(a.encoder), "data": str(a.data), "predict_batch_size": a.predict_batch_size}

    def own(self, system: str) -> dict[str, Any]:
        """The options that change one system only (a result run with others is not reused)."""
        a = self.args
        if system == "ours":
            return {"config": a.ours_config, "sets": a.ours_set, "quantize": a.ours_quantize}
        if system == "flair":
            return {"vectors": str(a.vectors), "decoder_lr": a.flair_decoder_lr}
        return {}


def train_rate(sentences: int, epochs: int, seconds: float) -> float:
    return round(sentences * epochs / seconds, 2)


def run_ours(s: Settings) -> dict[str, Any]:
    a, data, run_dir = s.args, s.data, s.out / "ours"
    python, env = main_python(), child_env(a.threads)
    command = [python, ROOT / "train.py", "--config", a.ours_config,
               "--set", f"data.train={data.ours['train']}", "--set", f"data.dev={data.ours['dev']}",
               "--set", "data.test=null", "--set", f"training.epochs={a.epochs}", "--set", f"training.seed={a.seed}",
               "--set", f"training.num_threads={a.threads}"]
    for item in a.ours_set:
        command += ["--set", item]
    command += ["--output-dir", run_dir]
    train = run_child(command, run_dir / "logs" / "train.log", env, a.max_rss_mb)
    epochs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
              if line.strip()]
    train_seconds = sum(record["seconds"] for record in epochs)
    metrics = json.loads((run_dir / "model" / "metrics.json").read_text(encoding="utf-8"))
    encoder, vectors = _ours_inputs(run_dir / "config.yaml")

    predict = [python, ROOT / "predict.py", "--model", run_dir, "--precision", "bf16",
               "--batch-size", str(a.predict_batch_size)]
    if a.ours_quantize != "none":
        predict += ["--quantize", a.ours_quantize]
    load_only = [run_child(predict + [data.ours["first"], "--output", run_dir / "load_only.pred.conll"],
                           run_dir / "logs" / f"predict_load_only_{i}.log", env, a.max_rss_mb) for i in (1, 2)]
    full = run_child(predict + [data.ours["test"], "--output", run_dir / "test.predict_py.conll"],
                     run_dir / "logs" / "predict_test.log", env, a.max_rss_mb)
    write_scored_file(run_dir / "test.predict_py.conll", run_dir / "test.pred.conll", data.peers["test"])
    startup = min(child.wall for child in load_only)
    tag_seconds = max(full.wall - startup, 1e-3)
    return {
        "train": {"seconds": round(train_seconds, 2), "epochs_run": len(epochs),
                  "sentences_per_second": train_rate(data.counts["train"], len(epochs), train_seconds),
                  "how": "sum of the per-epoch 'seconds' in metrics.jsonl (batch loop only)", **train.record()},
        "predict": {"seconds": round(tag_seconds, 2), "load_seconds": round(startup, 2),
                    "sentences_per_second": round(data.counts["test"] / tag_seconds, 2),
                    "how": "wall of predict.py on the test file minus the faster of two load-only runs "
                           "(predict.py on the first test sentence), so start-up and model load are excluded",
                    **full.record(), "load_only_runs": [child.record() for child in load_only]},
        "dev_f1": round(100 * metrics["dev"]["micro"]["f1"], 2) if metrics.get("dev") else None,
        "best_epoch": metrics.get("epoch"),
        "wall_seconds": round(train.wall + full.wall, 1),
        "details": {"config": a.ours_config, "sets": a.ours_set, "quantize": a.ours_quantize,
                    "precision_predict": "bf16", "encoder": encoder, "vectors": vectors,
                    "same_encoder": _same_path(encoder, a.encoder), "same_vectors": _same_path(vectors, a.vectors),
                    "peer_vectors": str(a.vectors),
                    "git": _git_head(),
                    "dev_f1_per_epoch": [round(100 * r["dev"]["f1"], 2) if isinstance(r.get("dev"), dict)
                                         and "f1" in r["dev"] else None for r in epochs]},
    }


def _ours_inputs(saved_config: Path) -> tuple[Optional[str], Optional[str]]:
    """The encoder and word-vectors paths of the config train.py saved (what ours really used)."""
    import yaml  # a ner_toolkit dependency: this script runs in the project's virtualenv

    model = (yaml.safe_load(saved_config.read_text(encoding="utf-8")) or {}).get("model") or {}
    return (model.get("encoder") or {}).get("name_or_path"), (model.get("words") or {}).get("vectors")


def _same_path(used: Optional[str], peers: Path) -> bool:
    """Whether a path of ours' config (relative to the repository, where train.py runs) is the peers' file."""
    return used is not None and (ROOT / used).resolve() == peers.resolve()


def _git_head() -> str:
    out = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True, text=True)
    return out.stdout.strip()


def run_peer(s: Settings, system: str) -> dict[str, Any]:
    """hf or flair: its helper script trains (writing dev predictions), then predicts the test file."""
    a, data, run_dir = s.args, s.data, s.out / system
    venv = ensure_venv(system, s.args.venvs)
    python, env = Path(venv["python"]), child_env(a.threads)
    env["FLAIR_CACHE_ROOT"] = str(a.venvs / "flair-cache")  # never ~/.flair
    helper = HERE / ("hf_token_classification.py" if system == "hf" else "flair_tagger.py")
    extra: list[Any] = []
    prep_seconds = None
    if system == "flair":
        vectors = s.out / "data" / (a.vectors.name.split(".txt")[0] + ".kv")
        if not vectors.exists():  # once per output folder; not part of any measured run
            prep_seconds = round(run_child([python, helper, "vectors", "--glove", a.vectors, "--output", vectors],
                                           run_dir / "logs" / "vectors.log", env, a.max_rss_mb).wall, 1)
        extra = ["--vectors", vectors]
        if a.flair_decoder_lr is not None:
            extra += ["--decoder-lr", a.flair_decoder_lr]
    train = run_child([python, helper, "train", "--encoder", a.encoder, "--data", data.peers["train"].parent,
                       "--out", run_dir, "--epochs", a.epochs, "--seed", a.seed, "--threads", a.threads,
                       "--batch-size", 32, "--lr", 5e-5, "--warmup", 0.1, *extra],
                      run_dir / "logs" / "train.log", env, a.max_rss_mb)
    stats = json.loads((run_dir / "train_stats.json").read_text(encoding="utf-8"))
    full = run_child([python, helper, "predict", "--model", run_dir / "model", "--input", data.peers["test"],
                      "--output", run_dir / "test.pred.conll", "--threads", a.threads,
                      "--batch-size", a.predict_batch_size, "--stats", run_dir / "predict_stats.json"],
                     run_dir / "logs" / "predict_test.log", env, a.max_rss_mb)
    pstats = json.loads((run_dir / "predict_stats.json").read_text(encoding="utf-8"))
    return {
        "train": {"seconds": round(stats["train_seconds"], 2), "epochs_run": stats["epochs"],
                  "sentences_per_second": train_rate(data.counts["train"], stats["epochs"], stats["train_seconds"]),
                  "how": stats["how"], **train.record()},
        "predict": {"seconds": round(pstats["tag_seconds"], 2), "load_seconds": round(pstats["load_seconds"], 2),
                    "sentences_per_second": round(data.counts["test"] / pstats["tag_seconds"], 2),
                    "how": pstats["how"], **full.record()},
        "dev_f1": score(scorer_path(), run_dir / "dev.pred.conll")["f1"],
        "wall_seconds": round(train.wall + full.wall, 1),
        "details": {"recipe": stats["recipe"], "versions": stats["versions"], "vectors_prep_seconds": prep_seconds,
                    "venv_install_seconds": venv["install_seconds"], "venv_steps": venv["steps"],
                    "prediction_notes": pstats.get("notes")},
    }


def scorer_path() -> Path:
    candidate = ROOT / ".venv" / "bin" / "ner-evaluate"
    found = candidate if candidate.exists() else shutil.which("ner-evaluate")
    if not found:
        sys.exit("error: ner-evaluate not found: run this with the project's virtualenv active")
    return Path(found)


def run_system(s: Settings, system: str) -> dict[str, Any]:
    run_dir = s.out / system
    if run_dir.exists():
        shutil.rmtree(run_dir)  # a previous (forced, failed or interrupted) run of this system
    print(f"[{system}] training on {s.data.counts['train']} sentences x {s.args.epochs} epochs", flush=True)
    result = run_ours(s) if system == "ours" else run_peer(s, system)
    result = {"system": system, "settings": s.common(), "own_settings": s.own(system),
              "test": score(scorer_path(), run_dir / "test.pred.conll"),
              **result, "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
    return result


# ------------------------------------------------------------------------------------------------ table

def _wall(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    if seconds >= 60:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds} s"


def table(results: Sequence[dict[str, Any]]) -> str:
    """The markdown table of the results, in SYSTEMS order, with the settings they share under it."""
    rows = [TABLE_HEADER, "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    noisy: list[str] = []
    for r in sorted(results, key=lambda r: SYSTEMS.index(r["system"])):
        name = r["system"]
        if name == "ours":
            name += f" ({r['details']['quantize']})" if r["details"]["quantize"] != "none" else " (bf16)"
        if name == "flair" and (r.get("own_settings") or {}).get("decoder_lr") is not None:
            name += f" (decoder lr {r['own_settings']['decoder_lr']:g})"
        dev = f"{r['dev_f1']:.2f}" if r.get("dev_f1") is not None else "-"
        busy = max(r["train"].get("foreign_cpu_share", 0.0), r["predict"].get("foreign_cpu_share", 0.0))
        if busy > BUSY_SHARE:
            name += " \\*"
            noisy.append(f"{r['system']} {100 * busy:.0f}%")
        rows.append(f"| {name} | {r['test']['f1']:.2f} | {dev} | {r['train']['sentences_per_second']:.1f} | "
                    f"{r['predict']['sentences_per_second']:.1f} | {r['train']['peak_rss_mb']:,} | "
                    f"{_wall(r['wall_seconds'])} |")
    settings = [json.dumps(r["settings"], sort_keys=True) for r in results]
    if results:
        c = results[0]["settings"]
        rows.append("")
        rows.append(f"{c['train_sentences']:,} training sentences x {c['epochs']} epochs, seed {c['seed']}, "
                    f"{c['threads']} threads; dev {c['dev_sentences']:,} and test {c['test_sentences']:,} sentences; "
                    f"prediction batches of {c['predict_batch_size']}; encoder {Path(c['encoder']).name}")
    for r in results:
        if r["system"] == "ours" and not r["details"].get("same_encoder", True):
            rows.append(f"ours' encoder is {r['details']['encoder']}, not the peers' {r['settings']['encoder']}")
        if r["system"] == "ours" and not r["details"].get("same_vectors", True):
            used = r["details"]["vectors"] or "none (no word vectors)"
            rows.append(f"ours' word vectors are {used}, not Flair's {r['details']['peer_vectors']}")
    short = [f"{r['system']} {r['train']['epochs_run']}" for r in results
             if r["train"]["epochs_run"] != r["settings"]["epochs"]]
    if short:
        rows.append(f"epochs actually trained (early stopping): {', '.join(short)}")
    versions = [f"{r['system']}: " + ", ".join(f"{k} {v}" for k, v in r["details"]["versions"].items())
                for r in results if "versions" in r["details"]]
    if versions:
        rows.append("; ".join(versions) + " (the peers' own virtualenvs)")
    if noisy:
        rows.append(f"\\* other processes kept the CPUs busy during a measured run ({', '.join(noisy)} of the "
                    f"machine's CPU time): its speeds are too low; run it again on an idle machine (--force)")
    if len(set(settings)) > 1:
        rows.append("WARNING: these results were run with different settings; see the JSONs")
    return "\n".join(rows)


def load_results(out: Path, systems: Sequence[str]) -> list[dict[str, Any]]:
    found = []
    for system in systems:
        path = out / "results" / f"{system}.json"
        if path.exists():
            found.append(json.loads(path.read_text(encoding="utf-8")))
    return found


# ------------------------------------------------------------------------------------------------- main

def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--systems", default="ours,hf,flair", help="comma-separated, from ours,hf,flair")
    ap.add_argument("--train-sentences", type=int, default=None, help="first N training sentences (default all)")
    ap.add_argument("--dev-sentences", type=int, default=None, help="first N dev sentences (default all)")
    ap.add_argument("--test-sentences", type=int, default=None, help="first N test sentences (default all)")
    ap.add_argument("--epochs", type=int, default=None, help="default: training.epochs of --ours-config")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--threads", type=int, default=2, help="torch threads in every process")
    ap.add_argument("--predict-batch-size", type=int, default=64, help="sentences per prediction batch")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "peers")
    ap.add_argument("--venvs", type=Path, default=None, help="the peers' virtualenvs (default OUT/venvs)")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "datasets" / "conll2003",
                    help="folder with train.txt, dev.txt, test.txt (CoNLL-2003, IOB1)")
    ap.add_argument("--encoder", type=Path, default=ROOT.parent / "shared" / "models" / "all-MiniLM-L6-v2",
                    help="the encoder directory of the peers (ours takes it from its config)")
    ap.add_argument("--vectors", type=Path, default=ROOT.parent / "shared" / "vectors" / "glove.6B.50d.txt.gz",
                    help="GloVe text file for Flair's WordEmbeddings (ours takes it from its config)")
    ap.add_argument("--ours-config", default="configs/conll03_minilm.yaml")
    ap.add_argument("--ours-set", action="append", default=[], metavar="KEY=VALUE",
                    help="extra --set for ours' train.py (repeatable)")
    ap.add_argument("--ours-quantize", choices=("none", "int8"), default="none",
                    help="int8: predict.py --quantize int8 (with --precision bf16)")
    ap.add_argument("--max-rss-mb", type=float, default=16000, help="kill a child whose resident memory passes this")
    ap.add_argument("--flair-decoder-lr", type=float, default=None,
                    help="Flair fine_tune's decoder_learning_rate: another rate for the BiLSTM, CRF and the "
                         "embeddings' reprojection (default: none, the 5e-5 of the recipe for every parameter)")
    ap.add_argument("--force", action="store_true", help="run systems whose results JSON exists again")
    ap.add_argument("--table", action="store_true", help="only print the table from OUT/results/*.json")
    ap.add_argument("--install-only", action="store_true", help="only create the peers' virtualenvs")
    args = ap.parse_args(argv)
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = sorted(set(args.systems) - set(SYSTEMS))
    if unknown:
        ap.error(f"unknown systems: {', '.join(unknown)} (choose from {', '.join(SYSTEMS)})")
    args.out, args.data, args.encoder, args.vectors = (p.resolve() for p in (args.out, args.data, args.encoder,
                                                                             args.vectors))
    args.venvs = (args.venvs or args.out / "venvs").resolve()
    if args.epochs is None and not args.table and not args.install_only:
        args.epochs = config_epochs(ROOT / args.ours_config)
    return args


def config_epochs(config: Path) -> int:
    """training.epochs of a ner_toolkit config: the epochs every system trains by default."""
    import yaml  # a ner_toolkit dependency: this script runs in the project's virtualenv

    if not config.exists():
        sys.exit(f"error: {config} not found; pass --ours-config, or --epochs")
    epochs = (yaml.safe_load(config.read_text(encoding="utf-8")).get("training") or {}).get("epochs")
    if not isinstance(epochs, int):
        sys.exit(f"error: {config} sets no training.epochs; pass --epochs")
    return epochs


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    if args.table:
        print(table(load_results(args.out, SYSTEMS)))
        return
    if args.install_only:
        for system in args.systems:
            if system != "ours":
                print(json.dumps(ensure_venv(system, args.venvs)["steps"]))
        return
    for path in (args.data, args.encoder, args.vectors, ROOT / args.ours_config if "ours" in args.systems else None):
        if path is not None and not path.exists():
            sys.exit(f"error: {path} not found")
    limits = {"train": args.train_sentences, "dev": args.dev_sentences, "test": args.test_sentences}
    settings = Settings(args, prepare_data(args.data, args.out, limits, write=False), args.out)
    todo = []
    for system in args.systems:  # every clash is found before anything is written or run
        path = args.out / "results" / f"{system}.json"
        if path.exists() and not args.force:
            previous = json.loads(path.read_text(encoding="utf-8"))
            if previous["settings"] != settings.common() or previous.get("own_settings") != settings.own(system):
                sys.exit(f"error: {path} was run with other settings ({previous['settings']}, "
                         f"{previous.get('own_settings')}); pass --force to replace it, or choose another --out")
            print(f"[{system}] {path} exists: skipped (--force runs it again)", flush=True)
        else:
            todo.append(system)
    if todo:
        settings.data = prepare_data(args.data, args.out, limits)
        (args.out / "results").mkdir(parents=True, exist_ok=True)
    for system in todo:
        path = args.out / "results" / f"{system}.json"
        result = run_system(settings, system)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)
        print(f"[{system}] test F1 {result['test']['f1']:.2f}; results in {path}", flush=True)
    print()
    print(table(load_results(args.out, SYSTEMS)))


if __name__ == "__main__":
    main()
