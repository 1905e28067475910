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
  ``predict.py --precision bf16`` (or ``--ours-quantize int8``: fp32 with int8 weights) on the test file.
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
  ``--predict-batch-size`` (64, predict.py's default) sentences; the fastest of ``--predict-repeats`` (3)
  rounds, timed as the peers' helpers time themselves: from token lists in memory to tag lists in memory
  (sentences sorted by length into batches, as all three do): ours by ours_predict.py (``Predictor.predict``,
  bf16). ours is also timed end to end, as users run it, and that figure is printed under the table: the wall
  of ``predict.py`` on the test file minus the wall of the same command, run right before it, on a file
  holding only the first test sentence (this counts reading and writing the CoNLL files); its output is the
  one scored.
  The speed of a shared host drifts over minutes: ``--remeasure-predict`` measures the trained systems again
  with their rounds taking turns (ours, hf, flair, ours, ...), so a slow spell falls on all of them.
* peak RSS: ``ru_maxrss`` of the training process from ``os.wait4`` on that one child (the same for all
  three; it covers the whole process: start-up, data, training, dev scoring, saving).
* wall: the training process's wall plus the kept prediction round's (ours: the full predict.py run).
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
sys.path.insert(0, str(HERE))  # its sibling modules, run as a script or imported
from peer_children import child_env, ensure_venv, main_python, run_child, score  # noqa: E402
from peer_data import Data, prepare_data  # noqa: E402
from peer_predict import measure_predict, remeasure_predict  # noqa: E402
from peer_table import SYSTEMS, load_results, table  # noqa: E402

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

    predicted = measure_predict(s, ["ours"])["ours"]
    return {
        "train": {"seconds": round(train_seconds, 2), "epochs_run": len(epochs),
                  "sentences_per_second": train_rate(data.counts["train"], len(epochs), train_seconds),
                  "how": "sum of the per-epoch 'seconds' in metrics.jsonl (batch loop only)", **train.record()},
        "predict": predicted,
        "dev_f1": round(100 * metrics["dev"]["micro"]["f1"], 2) if metrics.get("dev") else None,
        "best_epoch": metrics.get("epoch"),
        "wall_seconds": round(train.wall + predicted["wall_seconds"], 1),
        "details": {"config": a.ours_config, "sets": a.ours_set, "quantize": a.ours_quantize,
                    "precision_predict": "bf16" if a.ours_quantize == "none" else "fp32", "encoder": encoder, "vectors": vectors,
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
    predicted = measure_predict(s, [system])[system]
    return {
        "train": {"seconds": round(stats["train_seconds"], 2), "epochs_run": stats["epochs"],
                  "sentences_per_second": train_rate(data.counts["train"], stats["epochs"], stats["train_seconds"]),
                  "how": stats["how"], **train.record()},
        "predict": predicted,
        "dev_f1": score(scorer_path(), run_dir / "dev.pred.conll")["f1"],
        "wall_seconds": round(train.wall + predicted["wall_seconds"], 1),
        "details": {"recipe": stats["recipe"], "versions": stats["versions"], "vectors_prep_seconds": prep_seconds,
                    "venv_install_seconds": venv["install_seconds"], "venv_steps": venv["steps"],
                    "prediction_notes": predicted.pop("notes", None)},
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
                    help="int8: predict with dynamic int8 weights (predict.py --quantize int8, fp32 activations)")
    ap.add_argument("--max-rss-mb", type=float, default=16000, help="kill a child whose resident memory passes this")
    ap.add_argument("--flair-decoder-lr", type=float, default=None,
                    help="Flair fine_tune's decoder_learning_rate: another rate for the BiLSTM, CRF and the "
                         "embeddings' reprojection (default: none, the 5e-5 of the recipe for every parameter)")
    ap.add_argument("--predict-repeats", type=int, default=3,
                    help="prediction is measured this many times per system, the fastest kept (default 3)")
    ap.add_argument("--remeasure-predict", action="store_true",
                    help="only measure prediction again, for the trained --systems, their rounds taking turns")
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
    if args.remeasure_predict:
        remeasure_predict(settings, args.systems)
        print()
        print(table(load_results(args.out, SYSTEMS)))
        return
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
