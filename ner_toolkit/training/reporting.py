"""Looking at a run: training_curves.png from metrics.jsonl, optional TensorBoard scalars, and the
mean ± std summary of a multi-seed run."""
from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any, Optional

from ..errors import UserError, warn
from ..extras import require


def read_metrics(metrics_path: Path) -> list[dict]:
    """The records of ``metrics.jsonl``. A torn last line (a process killed mid-append) is dropped with
    a warning; an unreadable line before the last means the file was damaged otherwise: a UserError."""
    if not metrics_path.exists():
        return []
    lines = metrics_path.read_text(encoding="utf-8", errors="replace").splitlines()
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    records = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or not isinstance(record.get("epoch"), int):
                raise ValueError("not an epoch record")
        except ValueError:
            if i == last:
                warn("dropping a torn last line (the run was stopped while writing it)", metrics_path, i + 1)
                break
            raise UserError("not a metrics record (damaged file); fix or delete the line, or train from scratch "
                            "without --resume", metrics_path, i + 1) from None
        records.append(record)
    return records


def write_metrics_log(metrics_path: Path, records: list[dict]) -> None:
    """Replace ``metrics.jsonl`` as a whole (it is small): a failed write (disk full) leaves the previous
    complete file, never a torn line."""
    from ..atomic import atomic_write

    with atomic_write(metrics_path) as fh:
        fh.write("".join(json.dumps(record) + "\n" for record in records))


def plot_curves(metrics_path: Path, out_png: Path) -> Optional[str]:
    """Loss and dev F1 per epoch as a PNG; returns a note instead when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, never a window
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no training_curves.png (pip install 'ner_toolkit[plot]')"
    from ..atomic import atomic_write

    records = read_metrics(metrics_path)
    epochs = [r["epoch"] for r in records]
    fig, loss_ax = plt.subplots(figsize=(7, 4))
    loss_ax.plot(epochs, [r["loss"] for r in records], "o-", color="tab:blue", label="training loss")
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("training loss (NLL per sentence)", color="tab:blue")
    if any(r["dev"] for r in records):
        f1_ax = loss_ax.twinx()
        f1_ax.plot([r["epoch"] for r in records if r["dev"]], [100 * r["dev"]["f1"] for r in records if r["dev"]],
                   "s-", color="tab:orange", label="dev span F1")
        f1_ax.set_ylabel("dev span F1 (%)", color="tab:orange")
    loss_ax.set_title(metrics_path.parent.name)
    fig.tight_layout()
    with atomic_write(out_png, "wb") as fh:
        fig.savefig(fh, format="png", dpi=100)
    plt.close(fig)
    return None


class TensorBoardLog:
    """Per-epoch scalars (loss, dev P/R/F1, learning rates) in OUTPUT_DIR/tensorboard when enabled."""

    def __init__(self, directory: Path, enabled: bool) -> None:
        self.writer: Any = None
        if not enabled:
            return
        require("tensorboard", "training.tensorboard", path="config")
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(directory))

    def epoch(self, record: dict) -> None:
        if self.writer is None:
            return
        step = record["epoch"]
        self.writer.add_scalar("train/loss", record["loss"], step)
        for key, value in (record["dev"] or {}).items():
            self.writer.add_scalar(f"dev/{key}", value, step)
        for name, lr in (record["lr"] or {}).items():
            self.writer.add_scalar(f"lr/{name}", lr, step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def seed_summary(runs: dict[int, dict]) -> dict:
    """Per-seed scores and mean ± std (sample std; 0 for one seed) of dev and test span F1."""
    out: dict[str, Any] = {"seeds": sorted(runs), "runs": {str(s): runs[s] for s in sorted(runs)}}
    for key in ("dev_f1", "test_f1"):
        values = [runs[s][key] for s in sorted(runs) if runs[s].get(key) is not None]
        if values:
            out[key] = {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                        "values": values}
    return out
