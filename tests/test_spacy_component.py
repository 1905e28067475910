"""The spaCy component: nlp.add_pipe("ner_toolkit", config={"model": DIR}) sets doc.ents from the model's
character-offset entities on spacy.blank("en") and spacy.blank("zh") tokens. A stand-in predictor returns
chosen spans (aligned, inside a token, overlapping, out of range) for exact assertions; tiny models trained on
the shipped sample (and on Resume NER for Chinese) check the real path, saving, and the entry point."""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pytest

from conftest import REPO
from ner_toolkit.results import Entity

spacy = pytest.importorskip("spacy", reason="the spacy extra is not installed")
component = pytest.importorskip("ner_toolkit.integrations.spacy")
from spacy import displacy  # noqa: E402


def ent(text: str, label: str, start: int, end: int, score: float = 0.9) -> Entity:
    return Entity(label, start, end, text[start:end], score, 0, 0)


@dataclass
class Labels:
    types: tuple[str, ...] = ("PER", "LOC", "ORG", "MISC")


class StandIn:
    """A Predictor whose predict_text returns ``answers[text]``, recording every call's texts."""

    def __init__(self, answers: Optional[dict[str, list[Entity]]] = None) -> None:
        self.answers = answers or {}
        self.calls: list[list[str]] = []
        self.labels = Labels()

    def predict_text(self, texts: list[str]) -> list[list[Entity]]:
        assert isinstance(texts, list)
        self.calls.append(list(texts))
        return [list(self.answers.get(text, [])) for text in texts]


@pytest.fixture
def stand_in(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> StandIn:
    fake = StandIn()
    monkeypatch.setattr(component, "_load", lambda model, device, batch_size: (fake, tmp_path))
    return fake


def pipeline(lang: str = "en", **config) -> "spacy.language.Language":
    nlp = spacy.blank(lang)
    nlp.add_pipe("ner_toolkit", config={"model": "stand-in", **config})
    return nlp


def spans(doc) -> list[tuple[str, str, int, int]]:
    return [(s.text, s.label_, s.start_char, s.end_char) for s in doc.ents]


def test_aligned_entities_are_the_models_exactly(stand_in: StandIn) -> None:
    text = "Peter Blackburn visited Paris with the EU delegation."
    stand_in.answers[text] = [ent(text, "PER", 0, 15, 0.97), ent(text, "LOC", 24, 29, 0.81),
                              ent(text, "ORG", 39, 41, 0.55)]
    doc = pipeline()(text)
    assert spans(doc) == [("Peter Blackburn", "PER", 0, 15), ("Paris", "LOC", 24, 29), ("EU", "ORG", 39, 41)]
    assert [s._.ner_score for s in doc.ents] == [0.97, 0.81, 0.55]
    assert [s._.ner_expanded for s in doc.ents] == [False] * 3
    assert [s._.ner_offsets for s in doc.ents] == [(0, 15), (24, 29), (39, 41)]
    assert doc._.ner_dropped == []
    assert [t.ent_iob_ for t in doc[:3]] == ["B", "I", "O"]


def test_a_span_inside_a_token_is_expanded_and_recorded(stand_in: StandIn, caplog) -> None:
    text = "Germany's plan failed in U.S.-based talks."
    stand_in.answers[text] = [ent(text, "LOC", 0, 6, 0.7), ent(text, "LOC", 25, 29, 0.6)]  # "German", "U.S."
    nlp = pipeline()
    tokens = [t.text for t in nlp.make_doc(text)]
    assert "Germany" in tokens and "U.S.-based" in tokens  # spaCy's tokens cut differently from the model's
    with caplog.at_level(logging.WARNING, logger="ner_toolkit"):
        doc = nlp(text)
    assert [(s.text, s.start_char, s.end_char, s._.ner_offsets, s._.ner_score, s._.ner_expanded)
            for s in doc.ents] == [("Germany", 0, 7, (0, 6), 0.7, True), ("U.S.-based", 25, 35, (25, 29), 0.6, True)]
    assert doc._.ner_dropped == []
    assert nlp.get_pipe("ner_toolkit").stats["expanded"] == 2
    assert sum("expanded" in r.getMessage() for r in caplog.records) == 1  # once per component, not per span


def test_a_span_on_no_token_is_reported(stand_in: StandIn) -> None:
    text = "abc   def "
    stand_in.answers[text] = [ent(text, "ORG", 0, 3), ent(text, "ORG", 3, 4), ent(text, "ORG", 9, 10)]
    doc = pipeline()(text)
    assert spans(doc) == [("abc", "ORG", 0, 3)]
    assert [(d["start"], d["end"], d["reason"]) for d in doc._.ner_dropped] == [(3, 4, "unaligned"),
                                                                               (9, 10, "unaligned")]


def test_overlaps_keep_the_higher_score_whatever_the_order(stand_in: StandIn) -> None:
    text = "Acme Corporation of New York said so."
    first = [ent(text, "ORG", 0, 16, 0.6), ent(text, "ORG", 0, 30, 0.4), ent(text, "LOC", 20, 28, 0.9),
             ent(text, "MISC", 20, 28, 0.9)]
    results = []
    for answer in (first, first[::-1]):
        stand_in.answers[text] = answer
        doc = pipeline()(text)
        results.append((spans(doc), sorted((d["label"], d["start"], d["end"], d["reason"])
                                           for d in doc._.ner_dropped)))
    assert results[0] == results[1]
    kept, dropped = results[0]
    # LOC and MISC tie on score and length: the label decides (LOC < MISC); ORG 0-30 overlaps the 0.9 span
    assert kept == [("Acme Corporation", "ORG", 0, 16), ("New York", "LOC", 20, 28)]
    assert dropped == [("MISC", 20, 28, "overlap"), ("ORG", 0, 30, "overlap")]


def test_equal_scores_keep_the_longer_span(stand_in: StandIn) -> None:
    text = "New York City"
    stand_in.answers[text] = [ent(text, "LOC", 0, 8, 0.5), ent(text, "LOC", 0, 13, 0.5)]
    doc = pipeline()(text)
    assert spans(doc) == [("New York City", "LOC", 0, 13)]


def test_out_of_range_entities_are_reported_not_set(stand_in: StandIn, caplog) -> None:
    text = "Short text."
    stand_in.answers[text] = [ent(text, "PER", 0, 5), Entity("LOC", 6, 40, "text.", 0.8, 1, 2),
                              Entity("ORG", 4, 4, "", 0.8, 1, 1), Entity("ORG", -1, 3, "", 0.8, 0, 1)]
    nlp = pipeline()
    with caplog.at_level(logging.WARNING, logger="ner_toolkit"):
        doc = nlp(text)
    assert spans(doc) == [("Short", "PER", 0, 5)]
    assert [(d["label"], d["start"], d["end"], d["reason"]) for d in doc._.ner_dropped] == [
        ("LOC", 6, 40, "out_of_range"), ("ORG", 4, 4, "out_of_range"), ("ORG", -1, 3, "out_of_range")]
    assert nlp.get_pipe("ner_toolkit").stats["out_of_range"] == 3
    assert any("out_of_range" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("overwrite", [False, True])
def test_existing_entities_and_overwrite_ents(stand_in: StandIn, overwrite: bool) -> None:
    text = "Paris Hilton met Angela Merkel in Berlin."
    stand_in.answers[text] = [ent(text, "LOC", 0, 5, 0.6), ent(text, "PER", 17, 30, 0.9)]
    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("entity_ruler")
    ruler.add_patterns([{"label": "PERSON", "pattern": "Paris Hilton"}, {"label": "GPE", "pattern": "Berlin"}])
    nlp.add_pipe("ner_toolkit", config={"model": "stand-in", "overwrite_ents": overwrite})
    doc = nlp(text)
    if overwrite:
        assert spans(doc) == [("Paris", "LOC", 0, 5), ("Angela Merkel", "PER", 17, 30), ("Berlin", "GPE", 34, 40)]
        assert doc._.ner_dropped == []
    else:
        assert spans(doc) == [("Paris Hilton", "PERSON", 0, 12), ("Angela Merkel", "PER", 17, 30),
                              ("Berlin", "GPE", 34, 40)]
        assert [(d["text"], d["reason"]) for d in doc._.ner_dropped] == [("Paris", "existing")]
    assert doc.ents[0]._.ner_score == (0.6 if overwrite else None)  # the ruler's span has no model score


def test_pipe_batches_texts_in_order(stand_in: StandIn) -> None:
    texts = [f"Doc {i} from Paris" for i in range(7)]
    for i, text in enumerate(texts):
        stand_in.answers[text] = [ent(text, "LOC", text.index("Paris"), len(text), 0.5 + i / 100)]
    nlp = pipeline(batch_size=2)
    docs = list(nlp.pipe(texts, batch_size=3))  # nlp.pipe's batch_size: texts per call of the model
    assert [d.text for d in docs] == texts
    assert [d.ents[0]._.ner_score for d in docs] == [0.5 + i / 100 for i in range(7)]
    assert stand_in.calls == [texts[0:3], texts[3:6], texts[6:7]]  # one call per batch, in order
    stand_in.calls.clear()
    list(nlp.pipe(texts))  # spaCy's default batch (1000 texts): one call
    assert stand_in.calls == [texts]
    stand_in.calls.clear()
    list(nlp.get_pipe("ner_toolkit").pipe(nlp.make_doc(t) for t in texts))  # called directly: its batch_size
    assert [len(c) for c in stand_in.calls] == [2, 2, 2, 1]
    stand_in.calls.clear()
    nlp(texts[0])
    assert stand_in.calls == [[texts[0]]]


def test_displacy_renders_the_entities(stand_in: StandIn) -> None:
    text = "Peter Blackburn visited Paris."
    stand_in.answers[text] = [ent(text, "PER", 0, 15), ent(text, "LOC", 24, 29)]
    html = displacy.render(pipeline()(text), style="ent", page=True)
    for needle in ("Peter Blackburn", "Paris", ">PER<", ">LOC<"):
        assert needle in html


def test_chinese_characters_align(stand_in: StandIn) -> None:
    text = "高勇，男，1966年出生，中国国籍，北京大学毕业。"
    stand_in.answers[text] = [ent(text, "NAME", 0, 2, 0.9), ent(text, "CONT", 13, 15, 0.8),
                              ent(text, "ORG", 18, 22, 0.7)]
    doc = pipeline("zh")(text)
    assert spans(doc) == [("高勇", "NAME", 0, 2), ("中国", "CONT", 13, 15), ("北京大学", "ORG", 18, 22)]
    assert not any(s._.ner_expanded for s in doc.ents)


def test_extensions_register_once_for_several_components(stand_in: StandIn) -> None:
    component.register_extensions()
    nlp = spacy.blank("en")
    nlp.add_pipe("ner_toolkit", name="first", config={"model": "stand-in"})
    nlp.add_pipe("ner_toolkit", name="second", config={"model": "stand-in", "overwrite_ents": True})
    text = "Paris"
    stand_in.answers[text] = [ent(text, "LOC", 0, 5, 0.4)]
    assert spans(nlp(text)) == [("Paris", "LOC", 0, 5)]


@pytest.mark.parametrize("config,needle", [
    ({"model": None}, "config 'model' must name a model directory"),
    ({"model": "stand-in", "batch_size": 0}, "batch_size must be an integer from 1 to 65536, got 0"),
    ({"model": "stand-in", "batch_size": 10 ** 6}, "batch_size must be an integer from 1"),
])
def test_bad_config_values_are_one_line_errors(stand_in: StandIn, config: dict, needle: str) -> None:
    with pytest.raises(ValueError, match=needle) as info:
        spacy.blank("en").add_pipe("ner_toolkit", config=config)
    assert "\n" not in str(info.value)


def test_a_missing_model_directory_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(ValueError) as info:
        spacy.blank("en").add_pipe("ner_toolkit", config={"model": str(missing)})
    message = str(info.value)
    assert str(missing) in message and "model directory not found" in message and "\n" not in message


def test_a_bad_device_is_one_line(trained) -> None:
    with pytest.raises(ValueError, match="unknown device 'gpu!'"):
        spacy.blank("en").add_pipe("ner_toolkit", config={"model": str(trained.model_dir), "device": "gpu!"})


def test_spacy_missing_names_the_extra() -> None:
    code = ("import sys; sys.modules['spacy'] = None\n"
            "try:\n    import ner_toolkit.integrations.spacy\n"
            "except Exception as exc:\n    print(type(exc).__name__, exc)\n")
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.stdout.strip().startswith("UserError error: ")
    assert "spacy is not installed" in proc.stdout and "pip install 'ner_toolkit[spacy]'" in proc.stdout
    assert proc.stdout.count("\n") == 1


# The real path: a tiny model trained on the shipped sample (conftest's session fixture).

TEXT = ("EU rejects German call to boycott British lamb. Peter Blackburn reported from Brussels, where "
        "Germany's representative to the European Union said so. Japan beat Syria in Tokyo.")


def test_a_trained_model_sets_its_entities(trained, predictor) -> None:
    nlp = spacy.blank("en")
    nlp.add_pipe("ner_toolkit", config={"model": str(trained.model_dir)})
    assert set(nlp.get_pipe("ner_toolkit").labels) == set(predictor.labels.types)
    doc = nlp(TEXT)
    found = predictor.predict_text(TEXT)
    assert found, "the tiny model predicts no entity in the test text"
    placed = {s._.ner_offsets: s for s in doc.ents}
    accounted = 0
    for entity in found:
        span = placed.get((entity.start, entity.end))
        if span is not None:
            accounted += 1
            assert span.label_ == entity.label and span._.ner_score == pytest.approx(entity.score)
            if not span._.ner_expanded:
                assert (span.start_char, span.end_char, span.text) == (entity.start, entity.end, entity.text)
    assert accounted + len(doc._.ner_dropped) == len(found)  # every entity set or reported
    assert [d.to_json()["ents"] for d in nlp.pipe([TEXT, TEXT], batch_size=2)] == [doc.to_json()["ents"]] * 2


def test_to_disk_copies_the_model_and_loads_it_back(trained, tmp_path: Path) -> None:
    model = tmp_path / "model"
    shutil.copytree(trained.model_dir, model)
    nlp = spacy.blank("en")
    nlp.add_pipe("ner_toolkit", config={"model": str(model)})
    expected = spans(nlp(TEXT))
    nlp.to_disk(tmp_path / "pipeline")
    copy = tmp_path / "pipeline" / "ner_toolkit" / "model"
    assert sorted(p.name for p in copy.iterdir()) == sorted(p.name for p in model.iterdir())
    reloaded = spacy.load(tmp_path / "pipeline")
    assert spans(reloaded(TEXT)) == expected
    assert reloaded.get_pipe("ner_toolkit").directory == model  # the copy is the same: not loaded twice
    (model / "README.md").write_text("retrained since\n", encoding="utf-8")
    assert spacy.load(tmp_path / "pipeline").get_pipe("ner_toolkit").directory == copy  # the saved one wins
    shutil.rmtree(model)  # the config's directory is gone: the error names it; the copy is chosen by config
    with pytest.raises(ValueError, match="model directory not found"):
        spacy.load(tmp_path / "pipeline")
    loaded = spacy.load(tmp_path / "pipeline", config={"components": {"ner_toolkit": {"model": str(copy)}}})
    assert spans(loaded(TEXT)) == expected
    loaded.to_disk(tmp_path / "pipeline")  # saved onto the directory its model was read from
    assert sorted(p.name for p in copy.iterdir()) == sorted(p.name for p in trained.model_dir.iterdir())
    assert spans(spacy.load(tmp_path / "pipeline", config={"components": {"ner_toolkit": {"model": str(copy)}}})(
        TEXT)) == expected


def test_the_entry_point_finds_the_component_without_an_import(trained, tmp_path: Path) -> None:
    """setup.cfg's spacy_factories entry, as an installed package's metadata: add_pipe imports the module."""
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg", encoding="utf-8")
    info = tmp_path / "site" / "ner_toolkit_entry_test-0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ner_toolkit_entry_test\nVersion: 0\n")
    (info / "entry_points.txt").write_text(
        "[spacy_factories]\n" + cfg["options.entry_points"]["spacy_factories"].strip() + "\n")
    # spaCy 3.8 reads the factory entry points when it builds a Language (blank), not at import
    code = ("import sys, spacy\nassert 'ner_toolkit.integrations.spacy' not in sys.modules\n"
            "nlp = spacy.blank('en')\n"
            f"nlp.add_pipe('ner_toolkit', config={{'model': {str(trained.model_dir)!r}}})\n"
            "print(nlp.pipe_names, type(nlp.get_pipe('ner_toolkit')).__name__)\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path / "site"), str(REPO),
                                                       os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "['ner_toolkit'] NerToolkitComponent"


# Chinese: a character-level model trained on a slice of Resume NER (as tests/test_chinese.py does).

SHARED = REPO.parent / "shared"
VOCAB = SHARED / "models" / "albert_zh_brightmart" / "vocab.txt"
RESUME = SHARED / "datasets" / "resume_ner"


@pytest.mark.skipif(not (VOCAB.is_file() and (RESUME / "train.txt").is_file()),
                    reason="../shared Chinese ALBERT vocab or Resume NER not present")
def test_a_chinese_model_on_blank_zh(tmp_path: Path) -> None:
    from ner_toolkit.cli import train_main
    from ner_toolkit.predict import Predictor

    def head(src: Path, n: int) -> Path:
        (tmp_path / src.name).write_text("\n\n".join(src.read_text(encoding="utf-8").split("\n\n")[:n]) + "\n",
                                         encoding="utf-8")
        return tmp_path / src.name

    train, dev = head(RESUME / "train.txt", 60), head(RESUME / "dev.txt", 15)
    assert train_main(["--config", str(REPO / "configs" / "resume_albert_zh.yaml"), "--output-dir",
                       str(tmp_path / "run"), "--set", f"data.train={train}", "--set", f"data.dev={dev}",
                       "--set", "data.test=null", "--set", "model.encoder.scratch={embedding_size: 16, "
                       "hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 64, "
                       "max_position_embeddings: 64}", "--set", "model.encoder.tokenizer=" + str(VOCAB),
                       "--set", "training.epochs=12", "--set", "training.batch_size=8",
                       "--set", "training.lr={encoder: 3.0e-3, words: 2.0e-2, lstm: 1.0e-2, crf: 5.0e-2}"]) == 0
    text = "高勇，男，1966年出生，汉族，中国国籍，无境外永久居留权，本科学历，现任北京大学副教授。"
    nlp = spacy.blank("zh")
    nlp.add_pipe("ner_toolkit", config={"model": str(tmp_path / "run")})
    doc = nlp(text)
    found = Predictor.load(tmp_path / "run").predict_text(text)
    assert len(found) >= 3, found  # a model that finds entities (NAME, ORG, ... in this text)
    # Characters are tokens on both sides: every entity is set exactly as the model found it.
    assert spans(doc) == [(e.text, e.label, e.start, e.end) for e in found]
    assert [s._.ner_score for s in doc.ents] == pytest.approx([e.score for e in found])
    assert doc._.ner_dropped == []
