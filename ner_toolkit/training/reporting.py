"""Looking at a run: training_curves.png from metrics.jsonl, optional TensorBoard scalars, and the
mean ± std summary of a multi-seed run."""
from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any, Optional

from ..errors import UserError


def plot_curves(metrics_path: Path, out_png: Path) -> Optional[str]:
    """Loss and dev F1 per epoch as a PNG; returns a note instead when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, never a window
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no training_curves.png (pip install 'ner_toolkit[plot]')"
    from ..atomic import atomic_write

    records = [json.loads(line) for line in metrics_path.read_text(encoding="utf-8").splitlines() if line.strip()]
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
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UserError("training.tensorboard needs the tensorboard package (pip install tensorboard)",
                            "config") from None
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
