"""The markdown table bench_peers.py prints from OUT/results/*.json, with the settings the systems share
under it. Standard library only."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

SYSTEMS = ("ours", "hf", "flair")
BUSY_SHARE = 0.05  # other processes' share of the CPUs during a measured run above which its speeds are flagged
TABLE_HEADER = ("| system | test F1 | dev F1 | training sentences/s | prediction sentences/s "
                "| peak RSS training (MB) | wall |")


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
    for r in results:
        if "predict_py" in r["predict"]:
            rows.append(f"prediction: token lists in memory to tags in memory, model load excluded, the fastest "
                        f"of {len(r['predict']['rounds_seconds'])} rounds; ours through predict.py, CoNLL file in "
                        f"to CoNLL file out: {r['predict']['predict_py']['sentences_per_second']:.1f} sentences/s")
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
