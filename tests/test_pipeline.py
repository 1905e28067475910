"""End to end: train.py -> model directory -> predict.py / Predictor -> evaluation, as a user runs them."""
from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch

from ner_toolkit.cli import evaluate_main, predict_main, train_main
from ner_toolkit.config import load_config
from ner_toolkit.data.conll import read_sentences
from ner_toolkit.data.schemes import is_legal, to_spans
from ner_toolkit.predict import Predictor

from conftest import SAMPLE, run_cli, slice_conll, tiny_config_text

MODEL_FILES = ("config.yaml", "labels.json", "model.safetensors", "encoder/config.json", "config.json",
               "tokenizer_config.json", "word_vocab.txt", "metrics.json", "README.md")


def token_lines(path: Path) -> list[str]:
    return [line for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.startswith("-DOCSTART-")]


def last_column(path: Path) -> list[list[str]]:
    return [[cols[-1] for cols in s.columns] for s in read_sentences(path)]


def parse_json_after_report(stdout: str) -> dict:
    """``--json -`` prints the text report, then the JSON document."""
    start = stdout.index("\n{") + 1
    return json.loads(stdout[start:])


# --------------------------------------------------------------------------- training outputs

def test_train_writes_a_complete_model_directory(trained):
    model = trained.model_dir
    for name in MODEL_FILES:
        assert (model / name).is_file(), f"{name} missing from the model directory"
    assert (model / "tokenizer.json").is_file() or (model / "spiece.model").is_file()
    labels = json.loads((model / "labels.json").read_text())
    assert labels["output_scheme"] == "IOB1"  # the sample's scheme, detected
    assert labels["labels"][0] == "O" and {"B-PER", "E-PER", "S-LOC"} <= set(labels["labels"])
    saved = load_config(model / "config.yaml")
    # The saved config is the resolved one: data.word_tokenizer auto became the tokeniser raw text gets.
    assert saved == load_config(trained.config, (f"data.test={trained.config.parent / 'test.txt'}",
                                                 f"output_dir={trained.output_dir}", "data.word_tokenizer=conll"))
    vocab = (model / "word_vocab.txt").read_text(encoding="utf-8").splitlines()
    assert vocab[:2] == ["<pad>", "<unk>"] and "EU" in vocab
    metrics = json.loads((model / "metrics.json").read_text())
    assert metrics["dev"]["micro"]["support"] > 0 and metrics["test"]["micro"]["support"] > 0
    assert "done:" in trained.stdout and "Traceback" not in trained.stderr


def test_model_files_get_the_same_permissions(trained):
    # A model directory is shared (copied to a server, read by another account): every file must be
    # readable as the umask allows, like config.yaml, not private to the user who trained it.
    modes = {p.relative_to(trained.model_dir).as_posix(): oct(p.stat().st_mode & 0o777)
             for p in trained.model_dir.rglob("*") if p.is_file()}
    assert "encoder/config.json" in modes and "README.md" in modes
    assert len(set(modes.values())) == 1, modes
    directories = {p.name: oct(p.stat().st_mode & 0o777) for p in [trained.model_dir, trained.model_dir / "encoder"]}
    assert len(set(directories.values())) == 1, directories


def test_metrics_jsonl_has_one_line_per_epoch(trained):
    lines = (trained.output_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    epochs = load_config(trained.config).training.epochs
    assert [r["epoch"] for r in records] == list(range(1, epochs + 1))
    for r in records:
        assert math.isfinite(r["loss"]) and r["loss"] > 0
        assert set(r["dev"]) >= {"precision", "recall", "f1"}
        assert all(0.0 <= r["dev"][k] <= 1.0 for k in ("precision", "recall", "f1"))
        groups = {name.removesuffix("_no_decay") for name in r["lr"]}
        assert groups == {"encoder", "words", "lstm", "crf"}
        assert all(isinstance(v, float) and v >= 0 for v in r["lr"].values())
        assert r["seconds"] > 0 and r["sentences_per_second"] > 0
    assert records[-1]["loss"] < records[0]["loss"], "training did not reduce the loss"
    # Per-group learning rates really differ (the CRF's is 50x the encoder's in the tiny config).
    assert records[0]["lr"]["crf_no_decay"] == pytest.approx(50 * records[0]["lr"]["encoder"])


def test_saved_model_is_the_best_dev_epoch(trained):
    records = [json.loads(line) for line in (trained.output_dir / "metrics.jsonl").read_text().splitlines()]
    best = max(records, key=lambda r: r["dev"]["f1"])  # the first of equals
    metrics = json.loads((trained.model_dir / "metrics.json").read_text())
    assert metrics["epoch"] == best["epoch"]
    # The saved weights, re-loaded and re-scored, give the F1 logged for that epoch.
    assert metrics["dev"]["micro"]["f1"] == pytest.approx(best["dev"]["f1"], abs=1e-6)


def test_same_seed_gives_identical_training(trained, tmp_path, capsys):
    from safetensors.torch import load_file

    rc = train_main(["--config", str(trained.config), "--set", f"data.test={trained.config.parent / 'test.txt'}",
                     "--output-dir", str(tmp_path / "again")])
    assert rc == 0
    keep = ("epoch", "loss", "dev", "lr", "best")
    first = [{k: json.loads(line)[k] for k in keep} for line in (trained.output_dir / "metrics.jsonl").read_text().splitlines()]
    second = [{k: json.loads(line)[k] for k in keep} for line in (tmp_path / "again" / "metrics.jsonl").read_text().splitlines()]
    assert first == second
    a, b = load_file(trained.model_dir / "model.safetensors"), load_file(tmp_path / "again" / "model" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_save_load_predict_matches_the_in_memory_model(tiny_config, sample_data, tmp_path):
    from ner_toolkit.data.batching import bucketed_batches
    from ner_toolkit.model.directory import save_model
    from ner_toolkit.training.trainer import prepare

    config = load_config(tiny_config, (f"output_dir={tmp_path}",))
    setup = prepare(config)
    tagger = setup.tagger
    optimizer = torch.optim.AdamW(tagger.parameters(), lr=1e-2)
    tagger.train()
    for chunk in bucketed_batches(setup.items, 8, shuffle=True, rng=random.Random(0)):
        loss = tagger.loss(setup.collator(chunk).to(setup.device))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():  # varied predictions, so that any mismatch of weights or vocabulary shows
        generator = torch.Generator().manual_seed(0)
        tagger.emissions.weight.normal_(0.0, 2.0, generator=generator)
        tagger.emissions.bias.normal_(0.0, 1.0, generator=generator)
    save_model(tmp_path / "model", tagger, config, setup.labels, setup.tokenizer, setup.vocab, {})

    sentences = [s.tokens for s in read_sentences(sample_data.dev)] + [["EU", "rejects", "German", "call"]]
    in_memory = setup.predictor.predict(sentences)
    loaded = Predictor.load(tmp_path / "model").predict(sentences)
    assert loaded == in_memory
    assert len({t for tags in in_memory for t in tags}) >= 3


# --------------------------------------------------------------------------- predict.py

def test_predict_cli_keeps_the_file_and_adds_one_column(trained, sample_data, tmp_path, predictor):
    source = slice_conll(SAMPLE / "dev.txt", tmp_path / "in.txt", 60)
    source.write_text(source.read_text() + "\n\n   \n" + "-DOCSTART- -X- O O\n\nEU NNP I-NP I-ORG\n",
                      encoding="utf-8")  # extra blank, whitespace-only and DOCSTART lines in odd places
    out = tmp_path / "out.txt"
    proc = run_cli("predict.py", ["--model", trained.output_dir, source, "--output", out])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    lines_in = source.read_text(encoding="utf-8").splitlines()
    lines_out = out.read_text(encoding="utf-8").splitlines()
    assert len(lines_out) == len(lines_in)
    types = predictor.labels.types
    predicted = []
    for a, b in zip(lines_in, lines_out):
        if not a.strip():
            assert b == a
            continue
        assert b.startswith(a.rstrip() + " "), (a, b)
        tag = b[len(a.rstrip()) + 1:]
        assert " " not in tag and len(b.split()) == len(a.split()) + 1
        if a.startswith("-DOCSTART-"):
            assert tag == "O"
            continue
        assert tag == "O" or (tag[:2] in ("I-", "B-") and tag[2:] in types), tag
        predicted.append(tag)
    assert len(predicted) == len(token_lines(source))
    pred = last_column(out)
    assert all(is_legal(tags, "IOB1") for tags in pred)
    assert any(t != "O" for tags in pred for t in tags), "the tiny model should find some entities"
    # The file path and the Python API give the same tags.
    assert pred == predictor.predict([s.tokens for s in read_sentences(source)])


def test_predict_to_stdout_single_column_and_tabs(trained, tmp_path, capsys):
    plain = tmp_path / "plain.txt"
    plain.write_text("EU\nrejects\nGerman\ncall\n\nPeter\nBlackburn\n", encoding="utf-8")
    assert predict_main(["--model", str(trained.model_dir), str(plain)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 7 and out[4] == ""
    assert [line.split(" ")[0] for line in out if line] == ["EU", "rejects", "German", "call", "Peter", "Blackburn"]
    assert all(len(line.split(" ")) == 2 for line in out if line)

    tabs = tmp_path / "tabs.txt"
    tabs.write_text("EU\tNNP\tI-ORG\nrejects\tVBZ\tO\n", encoding="utf-8")
    assert predict_main(["--model", str(trained.model_dir), str(tabs)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[:3] for line in out] == [["EU", "NNP", "I-ORG"], ["rejects", "VBZ", "O"]]
    assert all(len(line.split("\t")) == 4 for line in out)


def test_several_inputs_and_a_directory(trained, sample_data, tmp_path, capsys):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    a = slice_conll(sample_data.dev, inputs / "a.conll", 5)
    b = slice_conll(sample_data.test, inputs / "b.txt", 7)
    (inputs / ".hidden").write_text("x O\n", encoding="utf-8")
    out = tmp_path / "out"
    assert predict_main(["--model", str(trained.model_dir), str(a), str(b), "--output", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.conll", "b.txt"]
    for src in (a, b):
        assert len((out / src.name).read_text().splitlines()) == len(src.read_text().splitlines())
        assert len(token_lines(out / src.name)) == len(token_lines(src))
    err = capsys.readouterr().err
    assert "a.conll" in err and "b.txt" in err

    out2 = tmp_path / "out2"
    assert predict_main(["--model", str(trained.model_dir), str(inputs), "--output", str(out2)]) == 0
    assert sorted(p.name for p in out2.iterdir()) == ["a.conll", "b.txt"]
    assert (out2 / "a.conll").read_text() == (out / "a.conll").read_text()


def test_evaluate_flag_and_ner_evaluate_agree(trained, sample_data, tmp_path, capsys):
    out = tmp_path / "pred.txt"
    assert predict_main(["--model", str(trained.model_dir), str(sample_data.dev), "--output", str(out),
                         "--evaluate", "--json", "-"]) == 0
    stdout = capsys.readouterr().out
    assert "micro avg" in stdout and "precision" in stdout and "LOC" in stdout
    from_predict = parse_json_after_report(stdout)
    assert from_predict["scheme"] == "IOB1" and from_predict["mode"] == "conlleval"

    assert evaluate_main([str(out), "--json", "-"]) == 0
    from_file = parse_json_after_report(capsys.readouterr().out)
    assert from_file["micro"] == from_predict["micro"]
    assert from_file["per_type"] == from_predict["per_type"]
    # Support = the gold spans of the file: every gold entity is counted.
    gold = [[cols[-1] for cols in s.columns] for s in read_sentences(sample_data.dev)]
    assert from_file["micro"]["support"] == sum(len(to_spans(g, "IOB1")) for g in gold)

    assert evaluate_main([str(out), "--strict", "--json", str(tmp_path / "s.json")]) == 0
    assert "mode: strict" in capsys.readouterr().out
    assert json.loads((tmp_path / "s.json").read_text())["mode"] == "strict"


def test_strict_and_conlleval_modes_differ_where_they_should(tmp_path, capsys):
    path = tmp_path / "gold_pred.txt"
    # gold B-PER I-PER; the prediction starts the chunk with I-: conlleval reads a chunk, strict does not.
    path.write_text("John B-PER I-PER\nSmith I-PER I-PER\nleft O O\n", encoding="utf-8")
    assert evaluate_main([str(path), "--json", "-"]) == 0
    assert parse_json_after_report(capsys.readouterr().out)["micro"]["f1"] == 1.0
    assert evaluate_main([str(path), "--strict", "--json", "-"]) == 0
    assert parse_json_after_report(capsys.readouterr().out)["micro"]["f1"] == 0.0


def test_python_api(trained):
    tags = Predictor.load(trained.model_dir).predict([["EU", "rejects", "German", "call"]])
    assert len(tags) == 1 and len(tags[0]) == 4
    assert all(isinstance(t, str) for t in tags[0])
    assert Predictor.load(trained.output_dir).predict([[], ["EU"]])[0] == []  # output_dir holding model/


# --------------------------------------------------------------------------- model variants and schemes

@pytest.fixture(scope="module")
def small_train(sample_data, tmp_path_factory):
    return slice_conll(sample_data.train, tmp_path_factory.mktemp("small") / "train.txt", 20)


@pytest.mark.parametrize("overrides, absent, present", [
    (["model.fusion=none"], "fusion.words.", "lstm."),
    (["model.fusion=add", "model.fusion_dim=24"], None, "fusion.project_words."),
    (["model.lstm.enabled=false"], "lstm.", "fusion.words."),
    (["model.decoder=softmax", "model.lstm.enabled=false"], "lstm.", "crf."),
    (["model.encoder.pooling=mean"], None, "lstm."),
    (["model.encoder.pooling=first_last", "data.tag_scheme=BIO"], None, "lstm."),
], ids=["fusion-none", "fusion-add", "no-lstm", "softmax-no-lstm", "pooling-mean", "first_last-BIO"])
def test_model_variants_train_and_predict(small_train, tmp_path, overrides, absent, present, capsys):
    from safetensors.torch import load_file

    config = tmp_path / "c.yaml"
    config.write_text(tiny_config_text(small_train, epochs=1), encoding="utf-8")
    args = ["--config", str(config), "--output-dir", str(tmp_path / "run")]
    for o in overrides:
        args += ["--set", o]
    assert train_main(args) == 0
    model = tmp_path / "run" / "model"
    saved = load_config(model / "config.yaml")
    assert saved == load_config(config, tuple(overrides) + (f"output_dir={tmp_path / 'run'}",
                                                            "data.word_tokenizer=conll"))
    keys = load_file(model / "model.safetensors").keys()
    if absent:
        assert not any(k.startswith(absent) for k in keys)
    assert any(k.startswith(present) for k in keys)
    sentences = [s.tokens for s in read_sentences(small_train)][:5] + [["EU", "\u200b", "x" * 300]]
    tags = Predictor.load(model).predict(sentences)
    assert [len(t) for t in tags] == [len(s) for s in sentences]
    assert all(is_legal(t, "IOB1") for t in tags)


FIRST = ["John", "Mary", "Peter", "Anna", "Paul", "Laura", "Mark", "Sofia"]
LAST = ["Smith", "Jones", "Brown", "Garcia", "Miller", "Davis"]
CITIES = [["Paris"], ["New", "York"], ["Rio", "de", "Janeiro"], ["Berlin"], ["Los", "Angeles"]]


def synthetic(scheme: str, n: int, seed: int) -> str:
    """Easy sentences ("John Smith visited New York today .") tagged in ``scheme``, two columns."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        person = [rng.choice(FIRST)] + ([rng.choice(LAST)] if rng.random() < 0.7 else [])
        city = rng.choice(CITIES)
        tokens = person + ["visited"] + city + ["today", "."]
        spans = [("PER", 0, len(person)), ("LOC", len(person) + 1, len(person) + 1 + len(city))]
        from ner_toolkit.data.schemes import from_spans

        tags = from_spans(spans, len(tokens), scheme)
        lines += [f"{t}\t{g}" for t, g in zip(tokens, tags)] + [""]
    return "\n".join(lines)


@pytest.mark.parametrize("scheme, prefixes, marks", [("BMES", set("BMES"), {"M", "E", "S"}), ("BIO", set("BI"), {"B"}),
                                                     ("BILOU", set("BILU"), {"L", "U"})])
def test_predictions_come_back_in_the_input_scheme(tmp_path, scheme, prefixes, marks, capsys):
    train = tmp_path / "train.txt"
    train.write_text(synthetic(scheme, 40, 0), encoding="utf-8")
    dev = tmp_path / "dev.txt"
    dev.write_text(synthetic(scheme, 10, 1), encoding="utf-8")
    config = tmp_path / "c.yaml"
    config.write_text(tiny_config_text(train, dev, epochs=6), encoding="utf-8")
    assert train_main(["--config", str(config), "--output-dir", str(tmp_path / "run")]) == 0
    labels = json.loads((tmp_path / "run" / "model" / "labels.json").read_text())
    assert labels["output_scheme"] == scheme

    out = tmp_path / "pred.txt"
    assert predict_main(["--model", str(tmp_path / "run"), str(dev), "--output", str(out), "--evaluate"]) == 0
    report = capsys.readouterr().out
    assert f"scheme: {scheme}" in report
    pred = last_column(out)
    used = {t.split("-")[0] for tags in pred for t in tags if t != "O"}
    assert used and used <= prefixes, used
    assert all(is_legal(tags, scheme) for tags in pred)
    assert used & marks, used  # not the internal BIOES passed through


def test_frozen_encoder_and_pretrained_vectors(small_train, tmp_path, capsys):
    """freeze keeps the encoder's initial weights; a frozen vectors file lands in the embedding rows it covers."""
    import gzip

    from safetensors.torch import load_file

    from ner_toolkit.training.trainer import prepare

    vectors = tmp_path / "vectors.txt.gz"
    with gzip.open(vectors, "wt", encoding="utf-8") as fh:
        fh.write("2 32\n")  # word2vec header
        fh.write("EU " + " ".join(["0.5"] * 32) + "\n")
        fh.write("german " + " ".join(["-0.25"] * 32) + "\n")  # found through the lowercase fallback
    config = tmp_path / "c.yaml"
    config.write_text(tiny_config_text(small_train, epochs=1), encoding="utf-8")
    overrides = ["model.encoder.freeze=true", f"model.words.vectors={vectors}", "model.words.freeze=true"]
    args = ["--config", str(config), "--output-dir", str(tmp_path / "run")]
    for o in overrides:
        args += ["--set", o]
    assert train_main(args) == 0
    # Coverage is reported over vocabulary words and over running training tokens ("german" reaches
    # "German" through the lowercase fallback; "EU" only matches itself).
    tokens = [t for s in read_sentences(small_train) for t in s.tokens]
    covered = sum(t == "EU" or t.lower() == "german" for t in tokens)
    assert 0 < covered < len(tokens)
    assert f"they cover {covered}/{len(tokens)} training tokens" in capsys.readouterr().err
    saved = load_file(tmp_path / "run" / "model" / "model.safetensors")
    initial = prepare(load_config(config, tuple(overrides) + (f"output_dir={tmp_path / 'unused'}",)))
    for name, value in initial.tagger.state_dict().items():
        if name.startswith("encoder."):
            assert torch.equal(saved[name], value), f"{name} changed although the encoder is frozen"
    vocab = initial.vocab
    assert vocab is not None
    table = saved["fusion.words.weight"]
    assert torch.all(table[vocab.lookup("EU")] == 0.5)
    assert torch.all(table[vocab.lookup("German")] == -0.25)
    assert not torch.equal(saved["emissions.weight"], initial.tagger.state_dict()["emissions.weight"])
