"""ner-pretrain: masking statistics, SOP pairs within documents, exact resume after SIGKILL, user errors,
and the tiny end-to-end flow (vocabulary -> pretraining -> train.py on the encoder)."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import torch

from ner_toolkit.cli import pretrain_main
from ner_toolkit.pretraining.data import (IGNORE, Masking, Pair, Vocabulary, choose_ngrams, make_pairs, mask_pair,
                                          plan_batches, read_documents, words_of)
from ner_toolkit.training.checkpoint import checkpoints

from conftest import REPO, SAMPLE, TINY_SCRATCH_YAML, assert_user_error, run_cli, tiny_config_text

# A synthetic vocabulary: ids 10..499 begin a word, 500..999 continue one.
VOCAB = Vocabulary(cls_id=2, sep_id=3, pad_id=0, mask_id=4, starts_word=[i < 500 for i in range(1000)],
                   regular=list(range(5, 1000)))


def _words(rng: random.Random, n_words: int, multi: bool) -> list[int]:
    ids = []
    for _ in range(n_words):
        ids.append(rng.randrange(10, 500))
        ids.extend(rng.randrange(500, 1000) for _ in range(rng.randrange(3) if multi else 0))
    return ids


def test_masking_chooses_15_percent_and_splits_80_10_10():
    rng = random.Random(0)
    chosen = masked = replaced = kept = total = 0
    for draw in range(300):
        pair = Pair(_words(rng, 200, False), _words(rng, 200, False), 0, 0)
        example = mask_pair(pair, VOCAB, Masking(), random.Random(f"draw/{draw}"))
        original = [VOCAB.cls_id, *pair.a, VOCAB.sep_id, *pair.b, VOCAB.sep_id]
        total += len(pair.a) + len(pair.b)
        for pos, label in enumerate(example.labels):
            if label == IGNORE:
                assert example.input_ids[pos] == original[pos]
                continue
            assert label == original[pos] and original[pos] not in (VOCAB.cls_id, VOCAB.sep_id)
            chosen += 1
            got = example.input_ids[pos]
            masked += got == VOCAB.mask_id
            kept += got == original[pos]
            replaced += got not in (VOCAB.mask_id, original[pos])
    assert abs(chosen / total - 0.15) < 0.003, chosen / total
    assert abs(masked / chosen - 0.8) < 0.015
    assert abs(replaced / chosen - 0.1) < 0.01
    assert abs(kept / chosen - 0.1) < 0.01


def test_ngram_lengths_follow_one_over_n():
    rng = random.Random(1)
    lengths: Counter = Counter()
    for draw in range(400):
        segments = [words_of(_words(rng, 300, False), 1, VOCAB, True), words_of(_words(rng, 300, False), 302, VOCAB, True)]
        for ngram in choose_ngrams(segments, 600, Masking(), random.Random(draw)):
            lengths[len(ngram)] += 1
    n = sum(lengths.values())
    expected = [1 / k / (1 + 1 / 2 + 1 / 3) for k in (1, 2, 3)]  # 0.545, 0.273, 0.182
    measured = [lengths[k] / n for k in (1, 2, 3)]
    # Drawn n follows 1/n exactly; what is *chosen* leans a little towards 1-grams, as in ALBERT: a drawn
    # n-gram that overlaps one chosen before is skipped (longer ones overlap more often), and the last one
    # of a pair is shortened when it would overshoot the 15% budget. Measured: 0.569, 0.265, 0.166.
    for e, m in zip(expected, measured):
        assert abs(e - m) < 0.03, (expected, measured)
    assert measured[0] > measured[1] > measured[2]
    assert set(lengths) == {1, 2, 3}
    # The draw itself, where neither applies: one n-gram from the start of a long segment.
    drawn = Counter(len(choose_ngrams([[[i] for i in range(100)]], 100, Masking(probability=0.03), random.Random(d))[0])
                    for d in range(20_000))
    for k, e in zip((1, 2, 3), expected):
        assert abs(drawn[k] / 20_000 - e) < 0.012, drawn


def test_masks_cover_whole_words_and_never_cross_segments():
    rng = random.Random(2)
    for draw in range(200):
        a, b = _words(rng, 30, True), _words(rng, 30, True)
        segments = [words_of(a, 1, VOCAB, True), words_of(b, len(a) + 2, VOCAB, True)]
        word_of = {pos: (s, w) for s, words in enumerate(segments) for w, word in enumerate(words) for pos in word}
        example = mask_pair(Pair(a, b, 0, 0), VOCAB, Masking(), random.Random(draw))
        chosen = {pos for pos, label in enumerate(example.labels) if label != IGNORE}
        for pos in chosen:  # every subword of a chosen word is chosen
            s, w = word_of[pos]
            assert set(segments[s][w]) <= chosen
        for ngram in choose_ngrams(segments, len(a) + len(b), Masking(), random.Random(draw)):
            assert len({word_of[word[0]][0] for word in ngram}) == 1  # one segment
            ws = [word_of[word[0]][1] for word in ngram]
            assert ws == list(range(ws[0], ws[0] + len(ws)))  # consecutive words
    # Same RNG seed, same example: masking depends on nothing else.
    pair = Pair(a, b, 1, 0)
    assert mask_pair(pair, VOCAB, Masking(), random.Random("x")) == mask_pair(pair, VOCAB, Masking(), random.Random("x"))


def test_sop_pairs_never_cross_documents_and_labels_are_balanced():
    rng = random.Random(3)
    labels = []
    for doc in range(600):
        # Every position of every document has its own id: a pair's ids tell where they came from.
        base = doc * 10_000
        sentences, position = [], 0
        for _ in range(rng.randrange(1, 8)):
            length = rng.randrange(1, 40)
            sentences.append(list(range(base + position, base + position + length)))
            position += length
        for pair in make_pairs(sentences, doc, 64, 0.1, random.Random(doc)):
            assert pair.document == doc and len(pair) <= 64
            assert all(base <= t < base + 10_000 for t in pair.a + pair.b)
            assert pair.a and pair.b
            first, second = (pair.a, pair.b) if pair.label == 0 else (pair.b, pair.a)
            assert max(first) < min(second)  # label 0: in document order; label 1: swapped
            labels.append(pair.label)
    assert len(labels) > 800
    assert abs(sum(labels) / len(labels) - 0.5) < 0.05


def test_documents_of_text_and_conll_files(tmp_path):
    text = tmp_path / "raw.txt"
    text.write_text("First sentence here.\nSecond one.\n\n\nAnother document.\n", encoding="utf-8")
    assert read_documents([str(text)]) == [["First sentence here.", "Second one."], ["Another document."]]
    docs = read_documents([str(SAMPLE / "dev.txt")])
    assert len(docs) == 11 and docs[0][0].startswith("CRICKET - LEICESTERSHIRE")  # -DOCSTART- bounded, token column


def test_token_budget_batches():
    lengths = [random.Random(i).randrange(5, 60) for i in range(500)]
    batches = plan_batches(lengths, 8, 256, random.Random(0))
    assert sorted(i for b in batches for i in b) == list(range(500))
    assert all(len(b) * max(lengths[i] for i in b) <= 256 for b in batches)


# --------------------------------------------------------------------------- the command line

def _config(tmp: Path, vocab: Path, output: Path, steps: int = 12, extra: str = "") -> Path:
    path = tmp / "pretrain.yaml"
    path.write_text(f"""\
output_dir: '{output}'
data:
  files: ['{SAMPLE / "train.txt"}']
  max_seq_length: 48
  heldout: 0.1
model:
  encoder:
    scratch: {TINY_SCRATCH_YAML}
    tokenizer: '{vocab}'
training:
  steps: {steps}
  batch_size: 16
  lr: 2.0e-3
  eval_every: 4
  checkpoint_every: 3
  keep_checkpoints: 50
  progress: false
{extra}""", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def vocab(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("vocab") / "spm"
    assert pretrain_main(["tokenizer", "--input", str(SAMPLE / "train.txt"), "--vocab-size", "800",
                          "--output", str(out)]) == 0
    return out


def test_vocabulary_is_an_albert_tokenizer_directory(vocab):
    from ner_toolkit.model.encoder import load_tokenizer

    tokenizer = load_tokenizer(str(vocab))
    assert (vocab / "spiece.model").is_file() and (vocab / "tokenizer.json").is_file()
    assert [tokenizer.pad_token_id, tokenizer.unk_token_id, tokenizer.cls_token_id, tokenizer.sep_token_id,
            tokenizer.mask_token_id] == [0, 1, 2, 3, 4]
    assert tokenizer.tokenize("EU rejects")[0] == "\u2581EU"  # cased, SentencePiece word starts
    assert 500 <= len(tokenizer) <= 800


def test_the_sample_config_is_valid_and_reads_the_sample():
    from ner_toolkit.pretraining.config import load_pretrain_config

    config = load_pretrain_config(REPO / "configs" / "pretrain_sample.yaml")
    assert all((REPO / f).is_file() for f in config.data.files)
    formats: list = []
    documents = read_documents([str(REPO / f) for f in config.data.files], config.data.format, 0, formats)
    assert formats == ["conll"] * 3 and len(documents) == 55  # the -DOCSTART- documents of train, dev and test
    assert config.model.encoder.scratch["max_position_embeddings"] >= config.data.max_seq_length


def test_the_reference_config_is_up_to_date():
    from ner_toolkit.pretraining.config import reference_yaml

    assert (REPO / "configs" / "pretrain_reference.yaml").read_text(encoding="utf-8") == reference_yaml()


def test_user_errors_are_one_line(tmp_path, vocab, capsys):
    config = _config(tmp_path, vocab, tmp_path / "out")
    cases = [(["train", "--config", str(config), "--set", "data.files=[missing.txt]"], ["missing.txt", "not found"]),
             (["train", "--config", str(config), "--set", "training.setps=3"], ["training.steps"]),
             (["train", "--config", str(config), "--set", "masking.random=0.5"], ["at most 1"]),
             (["train", "--config", str(config), "--set", "masking.probability=0"], ["masking.probability"]),
             (["tokenizer", "--input", "nothing.txt", "--vocab-size", "100", "--output", str(tmp_path / "v")],
              ["nothing.txt"]),
             (["train", "--config", str(config), "--resume"], ["nothing to resume"])]
    for argv, needles in cases:
        code = pretrain_main(argv)
        assert_user_error(code, capsys.readouterr().err, *needles)
    text = config.read_text(encoding="utf-8").replace("  batch_size: 16", "  batch_sise: 16")
    config.write_text(text, encoding="utf-8")
    line = text.splitlines().index("  batch_sise: 16") + 1
    assert_user_error(pretrain_main(["train", "--config", str(config)]), capsys.readouterr().err,
                      f"{config}:{line}:", "did you mean `training.batch_size`")


def _records(out: Path) -> list[dict]:
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    return [{k: v for k, v in r.items() if k not in ("seconds", "tokens_per_second")} for r in records]


def _weights(directory: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(directory / "model.safetensors"))


def test_killed_and_resumed_run_equals_the_uninterrupted_one(tmp_path, vocab):
    steps = 60
    straight = tmp_path / "straight"
    assert pretrain_main(["train", "--config", str(_config(tmp_path, vocab, straight, steps))]) == 0

    killed = tmp_path / "killed"
    config = _config(tmp_path, vocab, killed, steps)
    child = subprocess.Popen([sys.executable, "-c", "import sys; from ner_toolkit.cli import pretrain_main; "
                              "sys.exit(pretrain_main(sys.argv[1:]))", "train", "--config", str(config)],
                             env=dict(os.environ, PYTHONPATH=str(REPO)), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and child.poll() is None:
        if any(int(p.stem.split("-")[1]) >= 9 for p in checkpoints(killed / "checkpoints")):
            break
        time.sleep(0.005)
    assert child.poll() is None, "pretraining finished before it could be killed"
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert not (killed / "encoder").exists()
    assert len(_records(killed)) < len(_records(straight))

    assert pretrain_main(["train", "--config", str(config), "--resume"]) == 0
    assert _records(killed) == _records(straight)
    for name in ("encoder", "pretraining_model"):
        a, b = _weights(straight / name), _weights(killed / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


def test_two_gloo_processes_match_one_and_resume_exactly(tmp_path, vocab):
    """torchrun data parallelism: the same run as one process (up to rounding), and a resume under torchrun
    from an early checkpoint (a kill after it, simulated by removing what came later) ends bit for bit
    where the uninterrupted torchrun run ended."""
    script = tmp_path / "ner_pretrain.py"
    script.write_text("import sys\nfrom ner_toolkit.cli import pretrain_main\nsys.exit(pretrain_main())\n")
    # No dropout in the SOP head: one process and two then compute the same function.
    extra = ["--set", "model.encoder.scratch.classifier_dropout_prob=0.0"]
    config = _config(tmp_path, vocab, tmp_path / "unused", steps=8)
    single, multi = tmp_path / "single", tmp_path / "multi"
    assert pretrain_main(["train", "--config", str(config), "--output-dir", str(single), *extra]) == 0

    def torchrun(*args: str) -> None:
        proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                               str(script), "train", "--config", str(config), "--output-dir", str(multi), *extra,
                               *args], env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr

    torchrun()
    for a, b in zip(_records(single), _records(multi), strict=True):
        assert a["step"] == b["step"] and a["lr"] == b["lr"]
        assert a["train"] == pytest.approx(b["train"], rel=1e-5) and a["heldout"] == pytest.approx(b["heldout"], rel=1e-5)
    one, two = _weights(single / "encoder"), _weights(multi / "encoder")
    assert all(torch.allclose(one[k], two[k], atol=1e-5) for k in one)

    uninterrupted = _records(multi)
    for path in checkpoints(multi / "checkpoints"):
        if int(path.stem.split("-")[1]) > 3:
            path.unlink()
    torchrun("--resume")
    assert _records(multi) == uninterrupted
    assert all(torch.equal(two[k], w) for k, w in _weights(multi / "encoder").items())


def test_resume_refuses_a_changed_config(tmp_path, vocab, capsys):
    out = tmp_path / "run"
    config = _config(tmp_path, vocab, out, steps=3)
    assert pretrain_main(["train", "--config", str(config)]) == 0
    capsys.readouterr()
    code = pretrain_main(["train", "--config", str(config), "--resume", "--set", "training.lr=1.0e-3"])
    assert_user_error(code, capsys.readouterr().err, "cannot resume", "training.lr")


def test_bf16_token_budget_and_accumulation(tmp_path, vocab):
    out = tmp_path / "bf16"
    config = _config(tmp_path, vocab, out, steps=3)
    assert pretrain_main(["train", "--config", str(config), "--set", "training.precision=bf16",
                          "--set", "training.batch_tokens=300", "--set", "training.accumulate=2",
                          "--set", "training.eval_every=0", "--set", "data.heldout=0"]) == 0
    records = _records(out)
    assert [r["step"] for r in records] == [3] and records[0]["heldout"] is None  # no held-out documents
    assert all(torch.isfinite(t).all() for t in _weights(out / "encoder").values())


def test_pretrain_then_tag_with_the_encoder(tmp_path, vocab, sample_data):
    """The whole flow on the sample: vocabulary -> pretraining -> train.py with model.encoder.name_or_path."""
    out = tmp_path / "pretrained"
    assert pretrain_main(["train", "--config", str(_config(tmp_path, vocab, out, steps=6))]) == 0
    records = _records(out)
    assert [r["step"] for r in records] == [4, 6]
    held = records[-1]["heldout"]
    assert held["predicted"] > 0 and 0 <= held["mlm_accuracy"] <= 1 and 0 <= held["sop_accuracy"] <= 1
    assert (out / "pretraining_curves.png").stat().st_size > 0
    assert json.loads((out / "encoder" / "config.json").read_text())["architectures"] == ["AlbertModel"]

    # Continued pretraining reads the full model, heads included.
    from ner_toolkit.pretraining.config import PretrainEncoder
    from ner_toolkit.pretraining.model import build_model

    model, _, _ = build_model(PretrainEncoder(name_or_path=str(out / "pretraining_model")))
    saved = _weights(out / "pretraining_model")
    state = model.state_dict()
    assert all(torch.equal(state[k], saved[k]) for k in saved)

    config = tmp_path / "tag.yaml"
    config.write_text(tiny_config_text(sample_data.train, sample_data.dev, epochs=1), encoding="utf-8")
    proc = run_cli("train.py", ["--config", config, "--output-dir", tmp_path / "tagger",
                                "--set", f"model.encoder.name_or_path={out / 'encoder'}",
                                "--set", "model.encoder.scratch=null", "--set", "model.encoder.tokenizer=null"])
    assert proc.returncode == 0, proc.stderr
    assert "UNEXPECTED" not in proc.stderr and "MISSING" not in proc.stderr  # the encoder loads as it is
    assert (tmp_path / "tagger" / "model" / "model.safetensors").is_file()
