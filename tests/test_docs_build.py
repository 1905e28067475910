"""The docs site builds in strict mode: a broken link or anchor, a page missing from the nav, or a generated
reference page that fails to render fails this test (mkdocs and mkdocs-material come with the test extra)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_site_builds_strict_with_generated_references(tmp_path: Path) -> None:
    site = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(REPO / "mkdocs.yml"),
                           "--site-dir", str(site)], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", NO_MKDOCS_2_WARNING="1"))
    assert done.returncode == 0, done.stderr[-5000:]
    cli = (site / "reference" / "cli" / "index.html").read_text(encoding="utf-8")
    config = (site / "reference" / "config" / "index.html").read_text(encoding="utf-8")
    assert "ner predict" in cli and "--input-format" in cli and "ner pretrain tokenizer" in cli
    assert "data.label_column" in config and "masking.probability" in config
    assert "runnable" not in (site / "tutorials" / "quickstart" / "index.html").read_text(encoding="utf-8").replace(
        "<!-- runnable -->", "")  # the marker stays an HTML comment, never visible text
