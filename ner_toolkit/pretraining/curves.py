"""pretraining_curves.png: training and held-out MLM loss, held-out MLM and SOP accuracy, per step."""
from __future__ import annotations

from pathlib import Path
from typing import Optional


def plot_pretraining_curves(records: list[dict], out_png: Path) -> Optional[str]:
    """Draw the metrics.jsonl ``records``; returns a note instead when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, never a window
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no pretraining_curves.png (pip install 'ner_toolkit[plot]')"
    from ..atomic import atomic_write

    steps = [r["step"] for r in records]
    fig, loss_ax = plt.subplots(figsize=(7, 4))
    loss_ax.plot(steps, [r["train"]["mlm_loss"] for r in records], "o-", color="tab:blue", label="training MLM loss")
    scored = [r for r in records if r.get("heldout")]
    if scored:
        loss_ax.plot([r["step"] for r in scored], [r["heldout"]["mlm_loss"] for r in scored], "s--", color="tab:cyan",
                     label="held-out MLM loss")
        acc_ax = loss_ax.twinx()
        acc_ax.plot([r["step"] for r in scored], [100 * r["heldout"]["mlm_accuracy"] for r in scored], "^-",
                    color="tab:orange", label="held-out MLM accuracy")
        acc_ax.plot([r["step"] for r in scored], [100 * r["heldout"]["sop_accuracy"] for r in scored], "v-",
                    color="tab:red", label="held-out SOP accuracy")
        acc_ax.set_ylabel("accuracy (%)")
        acc_ax.legend(loc="upper right", fontsize=8)
    loss_ax.set_xlabel("optimizer step")
    loss_ax.set_ylabel("MLM loss (cross-entropy per predicted subword)")
    loss_ax.legend(loc="upper left", fontsize=8)
    loss_ax.set_title(out_png.parent.name)
    fig.tight_layout()
    with atomic_write(out_png, "wb") as fh:
        fig.savefig(fh, format="png", dpi=100)
    plt.close(fig)
    return None
