"""Outputs that chain: every file predict.py writes is scored by ``ner evaluate FILE`` and ``predict.py --evaluate``
with no column flags, the same as scoring the plain predictions (issue 30, item 3)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import assert_user_error, run_cli, slice_conll, tiny_config_text

from ner_toolkit.cli import evaluate_main, predict_main
from ner_toolkit.data.conll import read_conll, read_sentences
from ner_toolkit.evaluate import evaluate_spans, gold_scheme
from ner_toolkit.predict import Predictor


def _label_first(src: Path, dst: Path) -> Path:
    """``src`` with its gold column moved to the front (a label-first CoNLL file)."""
    rows = []
    for line in src.read_text(encoding="utf-8").splitlines():
        fields = line.split()
        rows.append(" ".join([fields[-1]] + fields[:-1]) if fields and fields[0] != "-DOCSTART-" else line)
    dst.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return dst


@pytest.fixture(scope="module")
def trained_models(sample_data, tmp_path_factory):
    """label column -> (model directory, gold test file): one tiny model per setting, trained once, on demand."""
    cache: dict[int, tuple[Path, Path]] = {}

    def get(label_column: int) -> tuple[Path, Path]:
        if label_column not in cache:
            d = tmp_path_factory.mktemp(f"chain{label_column}")
            train = slice_conll(sample_data.train, d / "train.txt", 60)
            test = slice_conll(sample_data.test, d / "test.txt", 12)
            extra = []
            if label_column == 0:
                train, test = _label_first(train, d / "train0.txt"), _label_first(test, d / "test0.txt")
                extra = ["--set", "data.label_column=0", "--set", "data.token_column=1"]
            config = d / "tiny.yaml"
            config.write_text(tiny_config_text(train, epochs=8), encoding="utf-8")
            proc = run_cli("train.py", ["--config", config, "--output-dir", d / "out", *extra])
            assert proc.returncode == 0, proc.stderr
            cache[label_column] = (d / "out" / "model", test)
        return cache[label_column]

    return get


@pytest.fixture(params=[-1, 0], ids=["label_last", "label_first"])
def model(request, trained_models):
    return (request.param, *trained_models(request.param))


@pytest.fixture
def last_model(trained_models):
    """The gold-last model (where one model is enough)."""
    return trained_models(-1)


def _reference(model_dir: Path, test: Path, label_column: int) -> dict:
    """Span scores of the plain predictions (the Python API) against the file's gold tags."""
    predictor = Predictor.load(model_dir)
    token_column = 1 if label_column == 0 else 0
    sentences = read_sentences(test, token_column, label_column)
    gold = [s.labels for s in sentences]
    pred = predictor.predict([s.tokens for s in sentences])
    return evaluate_spans(gold, pred, scheme=gold_scheme(gold, predictor.labels.output_scheme))["micro"]


def _same(a: dict, b: dict) -> None:
    for key in ("precision", "recall", "f1", "support", "predicted", "correct"):
        assert a[key] == pytest.approx(b[key]), key


@pytest.mark.parametrize("nbest", [1, 3])
@pytest.mark.parametrize("scores", [False, True], ids=["plain", "scores"])
def test_conll_outputs_score_without_column_flags(model, nbest, scores, tmp_path):
    label_column, model_dir, test = model
    out, from_predict, from_file = tmp_path / "pred.txt", tmp_path / "p.json", tmp_path / "e.json"
    flags = ["--nbest", str(nbest)] + (["--scores"] if scores else [])
    assert predict_main(["--model", str(model_dir), str(test), "--output", str(out), "--evaluate",
                         "--json", str(from_predict), *flags]) == 0
    reference = _reference(model_dir, test, label_column)
    assert reference["support"] > 0 and reference["predicted"] > 0
    _same(json.loads(from_predict.read_text())["micro"], reference)
    assert evaluate_main([str(out), "--json", str(from_file)]) == 0
    _same(json.loads(from_file.read_text())["micro"], reference)
    plain = nbest == 1 and not scores and label_column == -1
    # Plain outputs stay exactly what conlleval reads; the others name their columns on the first line.
    assert out.read_text(encoding="utf-8").startswith("# ner_toolkit columns:") != plain
    # The output is also a valid input again (its header a passthrough line), and explicit flags still win.
    assert sum(len(s) for s in read_sentences(out)) == sum(len(s) for s in read_sentences(test))
    if scores:
        width = len(next(s for s in read_conll(out) if hasattr(s, "columns")).columns[0])
        gold = label_column if label_column >= 0 else width - (nbest + 2) - 1
        assert evaluate_main([str(out), "--gold-column", str(gold), "--pred-column", str(-1 - (nbest - 1) - 2),
                              "--json", str(from_file), "--calibration", str(tmp_path / "r.png")]) == 0
        _same(json.loads(from_file.read_text())["micro"], reference)


@pytest.mark.parametrize("nbest", [1, 3])
@pytest.mark.parametrize("scores", [False, True], ids=["plain", "scores"])
def test_outputs_without_gold_are_refused_not_misread(last_model, nbest, scores, tmp_path, capsys):
    """(A label-first model reads its tokens from column 1: its inputs always carry the label column.)"""
    model_dir, test = last_model
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("\n".join(" ".join(f.split()[:1]) for f in test.read_text().splitlines()) + "\n")
    out = tmp_path / "pred.txt"
    flags = ["--nbest", str(nbest)] + (["--scores"] if scores else [])
    assert predict_main(["--model", str(model_dir), str(tokens), "--output", str(out), *flags]) == 0
    capsys.readouterr()
    assert evaluate_main([str(out)]) == 2
    # With a header the file says it has no gold; a plain one is refused at the token read as a tag.
    assert_user_error(2, capsys.readouterr().err, "no gold column" if nbest > 1 or scores else "--gold-column")


@pytest.mark.parametrize("nbest", [1, 3])
@pytest.mark.parametrize("scores", [False, True], ids=["plain", "scores"])
def test_jsonl_outputs_score_against_their_gold(last_model, nbest, scores, tmp_path):
    model_dir, _ = last_model
    gold = Path(__file__).resolve().parents[1] / "data" / "sample_jsonl" / "test.jsonl"
    subset = tmp_path / "gold.jsonl"
    subset.write_text("".join(gold.read_text(encoding="utf-8").splitlines(keepends=True)[:15]), encoding="utf-8")
    out, from_predict, from_file = tmp_path / "pred.jsonl", tmp_path / "p.json", tmp_path / "e.json"
    flags = ["--nbest", str(nbest)] + (["--scores"] if scores else [])
    assert predict_main(["--model", str(model_dir), str(subset), "--input-format", "jsonl", "--format", "jsonl",
                         "--output", str(out), "--evaluate", "--json", str(from_predict), *flags]) == 0
    assert evaluate_main([str(out), "--gold", str(subset), "--json", str(from_file)]) == 0
    a, b = json.loads(from_predict.read_text())["micro"], json.loads(from_file.read_text())["micro"]
    assert a["support"] > 0
    _same(a, b)


@pytest.mark.parametrize("fmt", ["jsonl", "hf", "label-studio"])
def test_json_outputs_are_one_line_errors_naming_the_fix(last_model, fmt, tmp_path, capsys):
    """Whatever their file name, JSON outputs are not read as CoNLL; hf and Label Studio outputs (no gold, and
    their predictions where a gold reader looks for annotations) are refused rather than scored as 0."""
    model_dir, _ = last_model
    gold = Path(__file__).resolve().parents[1] / "data" / "sample_jsonl" / "test.jsonl"
    subset = tmp_path / "gold.jsonl"
    subset.write_text("".join(gold.read_text(encoding="utf-8").splitlines(keepends=True)[:5]), encoding="utf-8")
    out = tmp_path / "pred.txt"  # an extension that does not say JSON
    assert predict_main(["--model", str(model_dir), str(subset), "--input-format", "jsonl", "--output", str(out),
                         "--format", fmt]) == 0
    capsys.readouterr()
    assert evaluate_main([str(out)]) == 2
    assert_user_error(2, capsys.readouterr().err, str(out) + ":1:", "--gold" if fmt == "jsonl" else "--format jsonl")
    if fmt != "jsonl":
        assert evaluate_main([str(out), "--gold", str(subset)]) == 2
        assert_user_error(2, capsys.readouterr().err, "--format jsonl")
    # A JSONL file without predicted entities (the gold input itself, say) is not scored as predicting nothing.
    bare = tmp_path / "bare.jsonl"
    bare.write_text(json.dumps({"text": "EU rejects German call"}) + "\n", encoding="utf-8")
    golden = tmp_path / "golden.jsonl"
    golden.write_text(json.dumps({"text": "EU rejects German call", "entities": [[0, 2, "ORG"]]}) + "\n")
    assert evaluate_main([str(bare), "--gold", str(golden)]) == 2
    assert_user_error(2, capsys.readouterr().err, "no predicted entities", "--format jsonl")


def test_report_goes_to_stderr_when_predictions_go_to_stdout(last_model, capsys):
    model_dir, test = last_model
    assert predict_main(["--model", str(model_dir), str(test), "--evaluate", "--json", "-"]) == 0
    captured = capsys.readouterr()
    # stdout is the predictions only: every line blank or the input's columns plus one tag.
    source = test.read_text(encoding="utf-8").splitlines()
    lines = captured.out.splitlines()
    assert len(lines) == len(source)
    for a, b in zip(source, lines):
        assert b == a if not a.strip() else b.split()[:-1] == a.split()
    assert "micro avg" in captured.err and '"micro"' in captured.err


def test_the_header_is_a_passthrough_line_for_every_reader(tmp_path):
    from ner_toolkit.data.conll import Passthrough
    from ner_toolkit.formats import Options, conll_layout, format_layout, parse_layout, writer

    layout = conll_layout(3, True, -1)
    assert layout == {"gold": -6, "pred": -5, "rank2": -4, "rank3": -3, "token_p": -2, "span_p": -1}
    header = format_layout(layout)
    assert parse_layout(header.rstrip("\n")) == layout
    path = tmp_path / "pred.txt"
    path.write_text(header + "EU\t\n" + "rejects\tO\n", encoding="utf-8")  # an empty first label: read ahead
    items = list(read_conll(path, missing_label="?"))
    assert isinstance(items[0], Passthrough) and items[0].line_number == 1
    assert items[1].labels == ["?", "O"] and items[1].line_numbers == [2, 3]
    # Re-predicted, an output's header is dropped: it described columns that are now the input's.
    assert writer("conll").passthrough(items[0], Options()) == ""
    # Only the first line is a header: elsewhere it is a '#' comment line (not of the file's columns), read as
    # a passthrough line, never as the columns' names; re-predicted, a stale header is dropped wherever it is.
    path.write_text("EU O\n" + header, encoding="utf-8")
    items = list(read_conll(path))
    assert [type(i).__name__ for i in items] == ["Sentence", "Passthrough"] and items[0].tokens == ["EU"]
    assert writer("conll").passthrough(items[1], Options()) == ""
