"""n-best paths, CRF confidences and JSONL output, as predict.py and the Python API give them."""
from __future__ import annotations

import json

from ner_toolkit.cli import evaluate_main, predict_main
from ner_toolkit.data.conll import read_sentences
from ner_toolkit.data.schemes import is_legal, to_spans
from ner_toolkit.evaluate import evaluate_spans


def test_detailed_prediction_is_consistent(predictor, sample_data):
    sentences = [s.tokens for s in read_sentences(sample_data.dev)]
    plain = predictor.predict(sentences)
    detailed = predictor.predict_detailed(sentences, nbest=4, scores=True)
    scheme = predictor.labels.output_scheme
    for tokens, tags, p in zip(sentences, plain, detailed):
        assert p.tags == tags
        assert len(p.token_confidence) == len(tokens)
        assert all(0.0 <= c <= 1.0 + 1e-6 for c in p.token_confidence)
        # The spans are those of the tags, each with a probability.
        assert [(s.label, s.start, s.end) for s in p.spans] == to_spans(tags, scheme)
        for span in p.spans:
            # P(this exact span) <= P(any one of its tokens has its tag).
            assert 0.0 < span.confidence <= min(p.token_confidence[span.start:span.end]) + 1e-5
        # n-best: best first, path 0 is the Viterbi path, all legal and distinct.
        assert p.nbest[0][0] == tags
        scores = [score for _, score in p.nbest]
        assert scores == sorted(scores, reverse=True)
        assert all(is_legal(t, scheme) and len(t) == len(tokens) for t, _ in p.nbest)
        assert len({tuple(t) for t, _ in p.nbest}) == len(p.nbest)


def test_nbest_and_scores_columns(trained, sample_data, tmp_path):
    out = tmp_path / "pred.txt"
    assert predict_main(["--model", str(trained.model_dir), str(sample_data.dev), "--output", str(out),
                         "--nbest", "3", "--scores"]) == 0
    plain = tmp_path / "plain.txt"
    assert predict_main(["--model", str(trained.model_dir), str(sample_data.dev), "--output", str(plain)]) == 0
    source = read_sentences(sample_data.dev)
    width = len(source[0].columns[0])
    for src, got, ref in zip(source, read_sentences(out), read_sentences(plain)):
        assert len(got.tokens) == len(src.tokens)
        for line_src, cols, ref_cols in zip(src.lines, got.columns, ref.columns):
            assert cols[:width] == line_src.split()
            assert len(cols) == width + 1 + 2 + 2  # prediction, ranks 2 and 3, token p, span p
            assert cols[width] == ref_cols[-1]  # the prediction column is the plain prediction
            assert 0.0 <= float(cols[width + 3]) <= 1.0
            assert cols[width + 4] == "-" or 0.0 < float(cols[width + 4]) <= 1.0
    # ner-evaluate reads the prediction where it is.
    assert evaluate_main([str(out), "--gold-column", str(width - 1), "--pred-column", str(width)]) == 0
    assert evaluate_main([str(plain)]) == 0


def test_jsonl_output(trained, sample_data, tmp_path):
    out = tmp_path / "pred.jsonl"
    assert predict_main(["--model", str(trained.model_dir), str(sample_data.dev), "--output", str(out),
                         "--format", "jsonl", "--nbest", "2"]) == 0
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    source = read_sentences(sample_data.dev)
    assert len(records) == len(source)
    for record, sentence in zip(records, source):
        assert record["tokens"] == sentence.tokens
        assert record["line"] == sentence.line_numbers[0]
        assert len(record["tags"]) == len(sentence.tokens) == len(record["token_confidence"])
        # CoNLL input: the text is the tokens joined by single spaces; entities index it.
        assert record["text"] == " ".join(sentence.tokens)
        spans = to_spans(record["tags"], "IOB1")
        assert [(e["label"], e["token_start"], e["token_end"]) for e in record["entities"]] == spans
        for entity in record["entities"]:
            assert entity["text"] == " ".join(sentence.tokens[entity["token_start"]:entity["token_end"]])
            assert record["text"][entity["start"]:entity["end"]] == entity["text"]
            assert 0.0 < entity["score"] <= 1.0
        assert record["nbest"][0]["tags"] == record["tags"]


def test_strict_and_lenient_agree_on_predictions(predictor, sample_data):
    """Predictions are always legal, so reading them strictly or the conlleval way finds the same spans."""
    sentences = read_sentences(sample_data.dev)
    pred = predictor.predict([s.tokens for s in sentences])
    lenient = evaluate_spans(pred, pred, scheme="IOB1")
    strict = evaluate_spans(pred, pred, scheme="IOB1", strict=True)
    assert lenient["micro"]["predicted"] == strict["micro"]["predicted"] > 0
    gold = [s.labels for s in sentences]
    assert evaluate_spans(gold, pred, scheme="IOB1")["micro"]["predicted"] == \
        evaluate_spans(gold, pred, scheme="IOB1", strict=True)["micro"]["predicted"]
