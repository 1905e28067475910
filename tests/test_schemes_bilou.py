"""BILOU (AllenNLP's BIOUL) end to end, as one entry of the scheme table: reading a BILOU CoNLL file (detected
and named), training with BILOU inside the model, predictions written back in BILOU, and scores that equal
those of the same spans written in BIO (evaluate_spans, predict.py --evaluate and ner-evaluate)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import tiny_config_text

from ner_toolkit.cli import evaluate_main, predict_main, train_main
from ner_toolkit.config import load_config
from ner_toolkit.data.conll import read_sentences
from ner_toolkit.data.schemes import SCHEMES, convert, detect_scheme, is_legal, to_spans
from ner_toolkit.evaluate import evaluate_spans
from ner_toolkit.training.dataset import build_labels, check_scheme, input_scheme, read_labelled

BILOU = SCHEMES["BILOU"]


def recode(src: Path, dst: Path, scheme: str, column: int = -1) -> Path:
    """``src`` with the tags of ``column`` rewritten in ``scheme`` (spans kept), everything else as it is."""
    blocks: list[list[list[str]]] = [[]]
    for line in src.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("-DOCSTART-"):
            blocks.append([line.split()] if line.strip() else [])
            blocks.append([])
        else:
            blocks[-1].append(line.split())
    tags = [[row[column] for row in block] for block in blocks if block and block[0][0] != "-DOCSTART-"]
    source = detect_scheme(tags)
    out = []
    for block in blocks:
        if block and block[0][0] != "-DOCSTART-":
            for row, tag in zip(block, convert([row[column] for row in block], source, scheme)):
                row[column] = tag
        out += [" ".join(row) for row in block] + ([""] if block else [])
    dst.write_text("\n".join(out) + "\n", encoding="utf-8")
    return dst


def gold_of(path: Path, column: int = -1) -> list[list[str]]:
    return [[c[column] for c in s.columns] for s in read_sentences(path)]


@pytest.fixture(scope="module")
def bilou_data(sample_data, tmp_path_factory):
    d = tmp_path_factory.mktemp("bilou")
    return {split: recode(getattr(sample_data, split), d / f"{split}.txt", "BILOU")
            for split in ("train", "dev", "test")}


def test_a_bilou_file_reads_detected_and_named(bilou_data, sample_data):
    tags = gold_of(bilou_data["train"])
    assert {t[0] for g in tags for t in g} == set("BILOU")  # the sample has single- and multi-token chunks
    assert [to_spans(g, BILOU) for g in tags] == [to_spans(g, "IOB1") for g in gold_of(sample_data.train)]
    for setting in ("auto", "BILOU", "bioul"):
        cfg = load_config(None, (f"data.train={bilou_data['train']}", f"data.input_scheme={setting}")).data
        data = read_labelled(str(bilou_data["train"]), cfg, "data.train")
        assert input_scheme(data, cfg) is BILOU
        check_scheme(data, BILOU)
    # BILOU inside the model is as legal as BIOES (same expressiveness), from any input scheme
    cfg = load_config(None, (f"data.train={sample_data.train}", "data.tag_scheme=BIOUL")).data
    data = read_labelled(str(sample_data.train), cfg, "data.train")
    labels = build_labels(data, input_scheme(data, cfg), cfg)
    assert labels.tag_scheme is BILOU and labels.output_scheme.name == "IOB1"
    assert labels.labels[:5] == ["O", "B-LOC", "I-LOC", "L-LOC", "U-LOC"]


def test_bilou_scores_equal_the_same_spans_in_bio(bilou_data, sample_data):
    gold = gold_of(bilou_data["dev"])
    bio = [convert(g, BILOU, "BIO") for g in gold]
    # a prediction that drops every other span and cuts multi-token chunks short
    pred = [convert(g, BILOU, "BIO") for g in gold]
    for tags in pred:
        for i, tag in enumerate(tags):
            if tag.startswith("I-") and i % 2:
                tags[i] = "O"
    pred = [convert(p, "BIO", "BIO") for p in pred]  # legal: strict mode reads it as conlleval does
    pred_bilou = [convert(p, "BIO", BILOU) for p in pred]
    for strict in (False, True):
        got = evaluate_spans(gold, pred_bilou, strict=strict)
        want = evaluate_spans(bio, pred, strict=strict)
        assert got["scheme"] == "BILOU" and want["scheme"] == "BIO"
        assert got["micro"] == want["micro"] and got["per_type"] == want["per_type"]
        assert 0 < got["micro"]["f1"] < 1
    # strict needs the L-: an unclosed chunk counts for conlleval only
    assert evaluate_spans([["B-PER", "L-PER"]], [["B-PER", "I-PER"]])["micro"]["f1"] == 1.0
    assert evaluate_spans([["B-PER", "L-PER"]], [["B-PER", "I-PER"]], strict=True)["micro"]["f1"] == 0.0


def test_ner_evaluate_reads_a_bilou_file(tmp_path, capsys):
    rows = [("John", "B-PER", "B-PER"), ("Smith", "L-PER", "L-PER"), ("in", "O", "O"), ("Paris", "U-LOC", "B-LOC"),
            ("", "", ""), ("Anna", "U-PER", "U-PER"), ("sings", "O", "U-LOC")]
    scored = tmp_path / "scored.txt"
    scored.write_text("\n".join(" ".join(r).strip() for r in rows) + "\n", encoding="utf-8")
    assert evaluate_main([str(scored), "--json", str(tmp_path / "s.json")]) == 0
    assert "scheme: BILOU" in capsys.readouterr().out
    result = json.loads((tmp_path / "s.json").read_text())
    # gold PER, LOC, PER; predicted PER, LOC (unclosed B-LOC, read the conlleval way), PER, LOC
    assert (result["micro"]["support"], result["micro"]["predicted"], result["micro"]["correct"]) == (3, 4, 3)


@pytest.fixture(scope="module")
def bilou_run(bilou_data, tmp_path_factory):
    """A tiny model trained on the BILOU copy with BILOU inside (its output directory)."""
    run = tmp_path_factory.mktemp("bilou_run")
    config = run / "c.yaml"
    config.write_text(tiny_config_text(bilou_data["train"], bilou_data["dev"], epochs=4), encoding="utf-8")
    assert train_main(["--config", str(config), "--output-dir", str(run), "--set", "data.tag_scheme=BILOU"]) == 0
    return run


def test_train_and_predict_in_bilou(bilou_data, bilou_run, tmp_path, capsys):
    run = bilou_run
    labels = json.loads((run / "model" / "labels.json").read_text())
    assert (labels["tag_scheme"], labels["output_scheme"]) == ("BILOU", "BILOU")
    assert {label[0] for label in labels["labels"]} == set("OBILU")
    capsys.readouterr()

    out = tmp_path / "pred.txt"
    assert predict_main(["--model", str(run / "model"), str(bilou_data["test"]), "--output", str(out),
                         "--evaluate", "--json", str(tmp_path / "p.json")]) == 0
    assert "scheme: BILOU" in capsys.readouterr().out
    pred = gold_of(out)
    assert all(is_legal(tags, BILOU) for tags in pred)
    assert {t[0] for tags in pred for t in tags} <= set("OBILU")
    # the score predict.py printed is ner-evaluate's on the file it wrote, and the BIO one of the same spans
    from_predict = json.loads((tmp_path / "p.json").read_text())
    assert evaluate_main([str(out), "--json", str(tmp_path / "e.json")]) == 0
    from_file = json.loads((tmp_path / "e.json").read_text())
    assert from_predict["micro"] == from_file["micro"]
    bio = recode(out, tmp_path / "bio.txt", "BIO", -1)
    bio = recode(bio, tmp_path / "bio2.txt", "BIO", -2)
    assert evaluate_main([str(bio), "--json", str(tmp_path / "b.json")]) == 0
    assert json.loads((tmp_path / "b.json").read_text())["micro"] == from_file["micro"]

    # the API: spans with CRF confidences (segments read in BILOU inside), n-best paths legal in BILOU
    from ner_toolkit.predict import Predictor

    predictor = Predictor.load(run / "model")
    assert predictor.labels.tag_scheme is BILOU and predictor.labels.output_scheme is BILOU
    sentences = [s.tokens for s in read_sentences(bilou_data["dev"])]
    detailed = predictor.predict_detailed(sentences, nbest=3, scores=True)
    assert sum(len(p.spans) for p in detailed) > 0
    for p in detailed:
        assert [(s.label, s.start, s.end) for s in p.spans] == to_spans(p.tags, BILOU)
        for span in p.spans:
            assert 0.0 < span.confidence <= min(p.token_confidence[span.start:span.end]) + 1e-5
        assert all(is_legal(tags, BILOU) for tags, _ in p.nbest)


def test_an_iob1_model_scores_bilou_gold_as_iob1_gold(trained, sample_data, bilou_data, tmp_path, capsys):
    """--evaluate reads the gold's scheme once and converts the predictions to it: same spans, same score."""
    scores = []
    for name, source in (("iob1", sample_data.test), ("bilou", bilou_data["test"])):
        out = tmp_path / f"{name}.json"
        assert predict_main(["--model", str(trained.model_dir), str(source), "--output", str(tmp_path / f"{name}.txt"),
                             "--evaluate", "--json", str(out)]) == 0
        scores.append(json.loads(out.read_text()))
    capsys.readouterr()
    assert (scores[0]["scheme"], scores[1]["scheme"]) == ("IOB1", "BILOU")
    assert scores[0]["micro"] == scores[1]["micro"] and scores[0]["per_type"] == scores[1]["per_type"]
    # the written predictions stay in the model's scheme (the training files')
    assert all(is_legal(tags, "IOB1") for tags in gold_of(tmp_path / "bilou.txt"))


def test_internal_schemes_come_from_the_table(sample_data):
    from ner_toolkit.errors import UserError

    for name in ("IOB1", "bmes"):  # refused where the config is read (the schema's choices), naming the --set
        with pytest.raises(UserError, match="--set:2: `data.tag_scheme` must be one of BIO, BIOES, BILOU, IOB2, "
                                            "IOBES, BIOUL"):
            load_config(None, (f"data.train={sample_data.train}", f"data.tag_scheme={name}"))
