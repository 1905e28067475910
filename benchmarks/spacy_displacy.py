"""docs/spacy_displacy.html: displaCy's entity view of a tagged English paragraph, through the spaCy component.

    python benchmarks/spacy_displacy.py                       # train briefly, then render
    python benchmarks/spacy_displacy.py --model runs/x/model  # render with a model you have

Without ``--model`` it first trains a model briefly with ``configs/conll03_minilm.yaml`` (the real
all-MiniLM-L6-v2 checkpoint and GloVe from ../shared) on the first ``--sentences`` sentences of CoNLL-2003
train for ``--epochs`` epoch(s), dev scored on its first 500 sentences, fp32 (into ``runs/spacy_displacy``),
and prints its dev F1. Then ``spacy.blank("en")`` + ``nlp.add_pipe("ner_toolkit", config={"model": DIR})``
tags ``PARAGRAPH`` and displaCy writes the page; the entities, their scores and whether each was expanded to
spaCy's tokens are printed too.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared"
CONLL = SHARED / "datasets" / "conll2003"

PARAGRAPH = ("Angela Merkel met Emmanuel Macron in Berlin on Tuesday to discuss the European Union's budget. "
             "Officials from Siemens and the U.S.-based Goldman Sachs said the talks, held at the Chancellery, "
             "went well. Macron flew back to Paris, while Merkel travelled to Brussels for a NATO summit; "
             "Reuters reported that Japan and South Korea would attend the World Cup draw in Zurich.")


def slice_sentences(src: Path, dst: Path, count: int) -> Path:
    """The first ``count`` sentences of a CoNLL file (blank-line separated)."""
    blocks = [b for b in src.read_text(encoding="utf-8").split("\n\n") if b.strip()]
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text("\n\n".join(blocks[:count]) + "\n", encoding="utf-8")
    return dst


def train_briefly(out: Path, sentences: int, epochs: int) -> Path:
    import ner_toolkit

    train = slice_sentences(CONLL / "train.txt", out / "data" / "train.txt", sentences)
    dev = slice_sentences(CONLL / "dev.txt", out / "data" / "dev.txt", 500)
    result = ner_toolkit.train(ROOT / "configs" / "conll03_minilm.yaml", output_dir=out / "run", overrides={
        "data.train": str(train), "data.dev": str(dev), "data.test": None, "training.epochs": epochs,
        "model.encoder.name_or_path": str(SHARED / "models" / "all-MiniLM-L6-v2"),
        "model.words.vectors": str(SHARED / "vectors" / "glove.6B.50d.txt.gz"),
        "training.precision": "fp32", "training.progress": False}, overwrite=True)
    print(f"trained {result.model_dir} in {result.seconds:.0f} s: dev F1 {result.dev_f1:.4f}")
    return result.model_dir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, help="a model directory (default: train one briefly, see above)")
    ap.add_argument("--sentences", type=int, default=3000, help="CoNLL-2003 train sentences for the brief run")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "spacy_displacy")
    ap.add_argument("--output", type=Path, default=ROOT / "docs" / "spacy_displacy.html")
    args = ap.parse_args()
    if not 1 <= args.sentences <= 20000 or not 1 <= args.epochs <= 50:
        ap.error("--sentences must be from 1 to 20000 and --epochs from 1 to 50")

    import spacy
    from spacy import displacy

    import ner_toolkit.integrations.spacy  # noqa: F401 - registers the factory from a checkout (no entry point)
    from ner_toolkit.atomic import atomic_write

    model = args.model or train_briefly(args.work, args.sentences, args.epochs)
    nlp = spacy.blank("en")
    nlp.add_pipe("ner_toolkit", config={"model": str(model)})
    doc = nlp(PARAGRAPH)
    for span in doc.ents:
        print(f"{span.label_:5} {span._.ner_score:.3f} {'expanded ' if span._.ner_expanded else ''}{span.text}")
    for item in doc._.ner_dropped:
        print(f"not set ({item['reason']}): {item['label']} {item['text']!r}")
    html = displacy.render(doc, style="ent", page=True, options={"colors": {"PER": "#aa9cfc", "MISC": "#ddd"}})
    with atomic_write(args.output) as f:
        f.write(html)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
