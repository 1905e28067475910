"""Document context (model.encoder.context): neighbouring sentences of the same document are read by
the encoder around each sentence, never labelled; training, evaluation and predict.py agree."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ner_toolkit.config import EncoderConfig
from ner_toolkit.data.batching import Collator, SubwordAligner, encode_sentences
from ner_toolkit.data.windows import fit_context as _fit_context
from ner_toolkit.data.conll import document_ids, read_conll

from conftest import SAMPLE, TINY_SCRATCH, TOKENIZER, assert_user_error, run_cli, tiny_config_text

SENTENCES = [["EU", "rejects", "German", "call"], ["Peter", "Blackburn"], ["BRUSSELS", "1996-08-22"],
             ["The", "European", "Commission", "said", "on", "Thursday"], ["Germany", "imported", "lamb"]]
DOCUMENTS = [1, 1, 1, 1, 2]


@pytest.fixture(scope="module")
def tiny_encoder():
    from ner_toolkit.model.encoder import build_hf_encoder

    torch.manual_seed(0)
    hf, tokenizer = build_hf_encoder(EncoderConfig(scratch=dict(TINY_SCRATCH), tokenizer=TOKENIZER))
    return hf.eval(), tokenizer


def flat_pieces(tokenizer, sentences):
    pieces = SubwordAligner(tokenizer, 24).pieces(sentences)
    return [[i for word in sentence for i in word] for sentence in pieces]


@pytest.mark.parametrize("context", [1, 3, 7, 50])
def test_context_is_the_nearest_subwords_of_the_same_document(tiny_encoder, context):
    _, tokenizer = tiny_encoder
    items = encode_sentences(SubwordAligner(tokenizer, 24), None, SENTENCES, documents=DOCUMENTS, context=context)
    flat = flat_pieces(tokenizer, SENTENCES)
    for n, item in enumerate(items):
        before = [i for k in range(n) if DOCUMENTS[k] == DOCUMENTS[n] for i in flat[k]]
        after = [i for k in range(n + 1, len(flat)) if DOCUMENTS[k] == DOCUMENTS[n] for i in flat[k]]
        assert item.left == before[max(0, len(before) - context):]
        assert item.right == after[:context]
    assert items[4].left == [] and items[3].right == [], "context crossed a document boundary"
    assert items[0].left == [] and items[4].right == []


def test_no_context_by_default(tiny_encoder):
    _, tokenizer = tiny_encoder
    items = encode_sentences(SubwordAligner(tokenizer, 24), None, SENTENCES, documents=DOCUMENTS)
    assert all(item.left == [] and item.right == [] for item in items)


def test_fit_context_shares_the_room():
    left, right = list(range(20)), list(range(100, 120))
    assert _fit_context(left, right, 10) == (left[15:], right[:5])  # the nearest subwords of each side
    assert _fit_context(left[:2], right, 10) == (left[:2], right[:8])  # a short side leaves room to the other
    assert _fit_context(left, right[:1], 10) == (left[11:], right[:1])
    assert _fit_context(left, right, 0) == ([], [])
    assert _fit_context([], [], 5) == ([], [])


def test_collator_reads_context_but_pools_only_the_sentence(tiny_encoder):
    hf, tokenizer = tiny_encoder
    from ner_toolkit.model.encoder import Encoder

    aligner = SubwordAligner(tokenizer, 24)
    items = encode_sentences(aligner, None, SENTENCES, documents=DOCUMENTS, context=6)
    collator = Collator(tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id, 128, 16, "first")
    item = items[2]  # context on both sides
    assert len(item.left) == len(item.right) == 6
    batch = collator([item])
    pieces = aligner.pieces([SENTENCES[2]])[0]
    row = [tokenizer.cls_token_id] + item.left + [i for p in pieces for i in p] + item.right + [tokenizer.sep_token_id]
    assert batch.input_ids[0].tolist() == row
    starts, pos = [], 1 + len(item.left)
    for p in pieces:
        starts.append(pos)
        pos += len(p)
    assert batch.pools[0][0].tolist() == starts, "words must be pooled from the sentence, not its context"
    # The encoder sees the context: the word vectors are those of the whole row at the sentence's positions.
    with torch.no_grad():
        cpu = torch.device("cpu")
        words = Encoder(hf, "first", freeze=False, dropout=0.0).eval()(batch.to(cpu))
        expected = hf(input_ids=torch.tensor([row])).last_hidden_state[0, starts]
        alone = Encoder(hf, "first", freeze=False, dropout=0.0).eval()(collator(encode_sentences(aligner, None, [SENTENCES[2]])).to(cpu))
    torch.testing.assert_close(words[0], expected, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(words, alone, atol=1e-3), "context changed nothing: it does not reach the encoder"


def test_context_is_trimmed_to_the_window(tiny_encoder):
    _, tokenizer = tiny_encoder
    aligner = SubwordAligner(tokenizer, 24)
    items = encode_sentences(aligner, None, SENTENCES, documents=DOCUMENTS, context=50)
    sentence = sum(len(p) for p in items[2].pieces)
    for max_length in (sentence + 2, sentence + 3, sentence + 9, 200):
        collator = Collator(tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id, max_length, 4, "first")
        batch = collator([items[2]])
        assert batch.input_ids.shape == (1, min(max_length, sentence + 2 + len(items[2].left) + len(items[2].right)))
        room = max_length - 2 - sentence
        left, right = _fit_context(items[2].left, items[2].right, room)
        assert batch.pools[0][0][0].item() == 1 + len(left)
    # A sentence longer than one window is split into windows of its own words, without context.
    long = items[3]
    assert long.left and max(len(p) for p in long.pieces) <= long.num_pieces - 2
    collator = Collator(tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id, long.num_pieces, 2,
                        "first")
    batch = collator([long])
    assert batch.input_ids.shape[0] > 1
    own = {i for p in long.pieces for i in p} | {tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id}
    assert set(batch.input_ids.flatten().tolist()) <= own


def test_document_ids_count_docstart_lines(tmp_path: Path):
    path = tmp_path / "docs.txt"
    path.write_text("a O\n\n-DOCSTART- O\n\nb O\n\nc O\n-DOCSTART- O\nd O\n\n-DOCSTART- O\n\n-DOCSTART- O\n\ne O\n",
                    encoding="utf-8")
    assert document_ids(list(read_conll(path))) == [0, 1, 1, 2, 4]


# --------------------------------------------------------------------------- end to end

@pytest.fixture(scope="module")
def context_run(sample_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("context") / "out"
    config = out.parent / "context.yaml"
    config.write_text(tiny_config_text(sample_data.train, sample_data.dev, sample_data.test, epochs=3), encoding="utf-8")
    proc = run_cli("train.py", ["--config", config, "--set", "model.encoder.context=24", "--output-dir", out])
    assert proc.returncode == 0, proc.stderr
    return out / "model", proc


def test_predict_file_matches_training_evaluation_with_context(context_run, sample_data, tmp_path):
    import json

    model_dir, _ = context_run
    metrics = json.loads((model_dir / "metrics.json").read_text(encoding="utf-8"))
    proc = run_cli("predict.py", ["--model", model_dir, sample_data.test, "--output", tmp_path / "p.txt",
                                  "--evaluate", "--json", tmp_path / "s.json"])
    assert proc.returncode == 0, proc.stderr
    scores = json.loads((tmp_path / "s.json").read_text(encoding="utf-8"))
    assert scores["micro"]["f1"] == pytest.approx(metrics["test"]["micro"]["f1"], abs=1e-9), \
        "predict.py must read context as training did"


def test_chunks_end_at_documents_so_context_is_never_cut(context_run, tmp_path):
    from ner_toolkit.predict import Predictor
    from ner_toolkit.streaming import predict_file

    model_dir, _ = context_run
    predictor = Predictor.load(model_dir)
    assert predictor.context == 24
    test = SAMPLE / "test.txt"  # 150 sentences in 9 documents
    predict_file(predictor, test, tmp_path / "whole.txt")
    calls = []
    detailed = predictor.predict_detailed

    def recording(sentences, *args, **kwargs):
        calls.append(len(sentences))
        return detailed(sentences, *args, **kwargs)

    predictor.predict_detailed = recording
    predict_file(predictor, test, tmp_path / "chunked.txt", chunk_sentences=3)  # cap 48 > any document
    assert (tmp_path / "chunked.txt").read_text(encoding="utf-8") == (tmp_path / "whole.txt").read_text(encoding="utf-8")
    # Each chunk starts a document: the sentence numbers where chunks start are all first sentences.
    documents = document_ids(list(read_conll(test)))
    firsts = {n for n in range(len(documents)) if n == 0 or documents[n] != documents[n - 1]}
    starts = [sum(calls[:c]) for c in range(len(calls))]
    assert len(calls) > 2 and sum(calls) == len(documents)
    assert set(starts) <= firsts, f"a chunk starts inside a document: {starts} vs {sorted(firsts)}"
    assert all(n >= 3 for n in calls[:-1])


def test_only_predicts_a_subset_with_the_rest_as_context(context_run):
    from ner_toolkit.predict import Predictor

    predictor = Predictor.load(context_run[0])
    full = predictor.predict_detailed(SENTENCES, documents=DOCUMENTS)
    part = predictor.predict_detailed(SENTENCES, documents=DOCUMENTS, only=[3, 1])
    assert [p.tags for p in part] == [full[3].tags, full[1].tags]
    assert [len(p.tags) for p in full] == [len(s) for s in SENTENCES]


def test_negative_context_is_a_config_error(sample_data, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(tiny_config_text(sample_data.train, epochs=1), encoding="utf-8")
    proc = run_cli("train.py", ["--config", config, "--set", "model.encoder.context=-1", "--output-dir", tmp_path / "o"])
    assert_user_error(proc.returncode, proc.stderr, "model.encoder.context")
    assert not (tmp_path / "o" / "model").exists()
