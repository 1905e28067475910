"""Measuring prediction for bench_peers.py: each system's fastest of ``--predict-repeats`` rounds, the systems'
rounds taking turns, and ``--remeasure-predict`` for systems already trained. ``s`` is bench_peers' Settings
(args, data, out). Runs in the project's virtualenv (standard library)."""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from peer_children import child_env, ensure_venv, main_python, run_child
from peer_data import write_scored_file

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def _predict_round(s: Any, system: str, round_: int) -> dict[str, Any]:
    """One measurement of tagging the test file: seconds of tagging (start-up and model load excluded), load
    seconds, and the measured child's record."""
    a, data, run_dir = s.args, s.data, s.out / system
    if system == "ours":
        python, env = main_python(), child_env(a.threads)
        # int8 weights replace mixed precision (the toolkit refuses both at once).
        mode = ["--precision", "bf16"] if a.ours_quantize == "none" else ["--precision", "fp32",
                                                                          "--quantize", a.ours_quantize]
        predict = [python, ROOT / "predict.py", "--model", run_dir, *mode, "--batch-size", str(a.predict_batch_size)]
        # Right before the full run, the same command on the first test sentence: the difference is tagging.
        load_only = run_child(predict + [data.ours["first"], "--output", run_dir / "load_only.pred.conll"],
                              run_dir / "logs" / f"predict_load_only_{round_}.log", env, a.max_rss_mb)
        full = run_child(predict + [data.ours["test"], "--output", run_dir / "test.predict_py.conll"],
                         run_dir / "logs" / f"predict_test_{round_}.log", env, a.max_rss_mb)
        write_scored_file(run_dir / "test.predict_py.conll", run_dir / "test.pred.conll", data.peers["test"])
        # Timed as the peers time themselves (token lists in memory to tags in memory): the table's figure.
        stats = run_dir / "predict_stats.json"
        memory = run_child([python, HERE / "ours_predict.py", "--model", run_dir, "--input", data.peers["test"],
                            "--threads", a.threads, "--batch-size", a.predict_batch_size, "--stats", stats, *mode],
                           run_dir / "logs" / f"predict_in_memory_{round_}.log", env, a.max_rss_mb)
        pstats = json.loads(stats.read_text(encoding="utf-8"))
        return {"tag_seconds": pstats["tag_seconds"], "load_seconds": pstats["load_seconds"], "how": pstats["how"],
                **memory.record(),
                "predict_py": {"tag_seconds": max(full.wall - load_only.wall, 1e-3),
                               "how": "wall of predict.py on the test file minus, right before it, the wall of "
                                      "the same command on the first test sentence: start-up and model load "
                                      "excluded, reading and writing the CoNLL files counted",
                               **full.record(), "load_only_run": load_only.record()}}
    python, env = Path(ensure_venv(system, a.venvs)["python"]), child_env(a.threads)
    env["FLAIR_CACHE_ROOT"] = str(a.venvs / "flair-cache")  # never ~/.flair
    helper = HERE / ("hf_token_classification.py" if system == "hf" else "flair_tagger.py")
    full = run_child([python, helper, "predict", "--model", run_dir / "model", "--input", data.peers["test"],
                      "--output", run_dir / "test.pred.conll", "--threads", a.threads,
                      "--batch-size", a.predict_batch_size, "--stats", run_dir / "predict_stats.json"],
                     run_dir / "logs" / f"predict_test_{round_}.log", env, a.max_rss_mb)
    pstats = json.loads((run_dir / "predict_stats.json").read_text(encoding="utf-8"))
    return {"tag_seconds": pstats["tag_seconds"], "load_seconds": pstats["load_seconds"], "how": pstats["how"],
            "notes": pstats.get("notes"), **full.record()}


def measure_predict(s: Any, systems: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Each system's fastest of ``--predict-repeats`` rounds; with several systems the rounds take turns
    (ours, hf, flair, ours, ...), so a slower spell of a shared host falls on every system alike."""
    rounds: dict[str, list[dict[str, Any]]] = {system: [] for system in systems}
    for round_ in range(1, s.args.predict_repeats + 1):
        for system in systems:
            rounds[system].append(_predict_round(s, system, round_))
    best = {}
    for system, found in rounds.items():
        fastest = dict(min(found, key=lambda r: r["tag_seconds"]))
        seconds = fastest.pop("tag_seconds")
        fastest.update(seconds=round(seconds, 2), load_seconds=round(fastest["load_seconds"], 2),
                       sentences_per_second=round(s.data.counts["test"] / seconds, 2),
                       rounds_seconds=[round(r["tag_seconds"], 2) for r in found])
        if "predict_py" in fastest:
            seconds_py = min(r["predict_py"]["tag_seconds"] for r in found)
            fastest["predict_py"] = {**fastest["predict_py"], "seconds": round(seconds_py, 2),
                                     "sentences_per_second": round(s.data.counts["test"] / seconds_py, 2),
                                     "rounds_seconds": [round(r["predict_py"]["tag_seconds"], 2) for r in found]}
            del fastest["predict_py"]["tag_seconds"]
        best[system] = fastest
    return best


def remeasure_predict(s: Any, systems: Sequence[str]) -> None:
    """Measure prediction again for trained systems, rounds taking turns, and replace their results'
    ``predict`` (training, scores and the models stay)."""
    results = {}
    for system in systems:
        path = s.out / "results" / f"{system}.json"
        if not path.exists():
            sys.exit(f"error: {path} not found: train the system first (without --remeasure-predict)")
        results[system] = json.loads(path.read_text(encoding="utf-8"))
        if results[system]["settings"] != s.common() or results[system].get("own_settings") != s.own(system):
            sys.exit(f"error: {path} was run with other settings; pass the options it was run with")
    for system, predicted in measure_predict(s, systems).items():
        result = results[system]
        notes = predicted.pop("notes", None)
        if notes is not None:
            result["details"]["prediction_notes"] = notes
        result["wall_seconds"] = round(result["train"]["wall_seconds"] + predicted["wall_seconds"], 1)
        result["predict"] = {**predicted, "remeasured": time.strftime("%Y-%m-%d %H:%M:%S"),
                             "remeasured_with": list(systems)}
        path = s.out / "results" / f"{system}.json"
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)
        print(f"[{system}] prediction {predicted['sentences_per_second']:.1f} sentences/s "
              f"(rounds: {predicted['rounds_seconds']} s)", flush=True)
