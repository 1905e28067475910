"""Word vocabulary and pretrained vector files."""
from __future__ import annotations

import gzip
from pathlib import Path

import pytest
import torch

from ner_toolkit.data.vectors import load_vectors as read_vectors
from ner_toolkit.data.vectors import vector_coverage
from ner_toolkit.data.vocab import PAD, UNK, Vocab
from ner_toolkit.errors import UserError


def test_build_orders_by_frequency_then_word() -> None:
    vocab = Vocab.build(["b", "a", "c", "b", "a", "d", "b"])
    assert vocab.words == [PAD, UNK, "b", "a", "c", "d"]
    assert vocab.lookup("b") == 2 and vocab.lookup("d") == 5


def test_build_min_freq_and_max_size() -> None:
    tokens = ["x"] * 3 + ["y"] * 2 + ["z"]
    assert Vocab.build(tokens, min_freq=2).words == [PAD, UNK, "x", "y"]
    assert Vocab.build(tokens, max_size=3).words == [PAD, UNK, "x"]
    with pytest.raises(ValueError):
        Vocab.build(tokens, max_size=1)


def test_build_ignores_literal_special_tokens() -> None:
    assert Vocab.build(["<unk>", "<pad>", "a"]).words == [PAD, UNK, "a"]


def test_lowercase_counts_and_looks_up_lowercased() -> None:
    vocab = Vocab.build(["Paris", "paris", "PARIS", "Rome"], lowercase=True)
    assert vocab.words == [PAD, UNK, "paris", "rome"]
    assert vocab.lookup("PaRiS") == 2
    assert vocab.encode(["ROME", "Berlin"]) == [3, 1]


def test_case_sensitive_by_default_and_oov_is_unk() -> None:
    vocab = Vocab.build(["Paris"])
    assert vocab.lookup("Paris") == 2
    assert vocab.lookup("paris") == 1
    assert vocab.encode([]) == []
    assert "Paris" in vocab and "paris" not in vocab
    assert len(vocab) == 3


def test_constructor_checks_specials() -> None:
    with pytest.raises(ValueError):
        Vocab(["a", UNK])
    with pytest.raises(ValueError):
        Vocab([PAD, UNK, "a", "a"])


def test_save_load_round_trip(tmp_path: Path) -> None:
    vocab = Vocab.build(["été", "Köln", "東京", "a\u00a0b", "été"])
    path = tmp_path / "words.txt"
    vocab.save(path)
    assert path.read_text(encoding="utf-8").splitlines()[:3] == [PAD, UNK, "été"]
    loaded = Vocab.load(path, lowercase=False)
    assert loaded.words == vocab.words and loaded.lowercase is False
    assert Vocab.load(path, lowercase=True).lowercase is True


@pytest.mark.parametrize(
    "content, line, needle",
    [
        ("<unk>\n<pad>\na\n", 1, "expected '<pad>' on line 1"),
        ("<pad>\nfoo\n", 2, "expected '<unk>' on line 2"),
        ("<pad>\n<unk>\na b\n", 3, "whitespace"),
        ("<pad>\n<unk>\na\n\nb\n", 4, "empty"),
        ("<pad>\n<unk>\na\na\n", 4, "repeats line 3"),
    ],
)
def test_corrupt_vocab_file_names_the_line(tmp_path: Path, content: str, line: int, needle: str) -> None:
    path = tmp_path / "words.txt"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(UserError) as info:
        Vocab.load(path, lowercase=False)
    assert info.value.line == line and needle in info.value.message


def test_vocab_file_errors_without_a_line(tmp_path: Path) -> None:
    (tmp_path / "short.txt").write_text("<pad>\n")
    with pytest.raises(UserError):
        Vocab.load(tmp_path / "short.txt", lowercase=False)
    with pytest.raises(UserError) as info:
        Vocab.load(tmp_path / "missing.txt", lowercase=False)
    assert info.value.line is None and "no such" in info.value.message


def test_invalid_utf8_vocab_file(tmp_path: Path) -> None:
    path = tmp_path / "words.txt"
    path.write_bytes(b"<pad>\n<unk>\n\xff\n")
    with pytest.raises(UserError) as info:
        Vocab.load(path, lowercase=False)
    assert info.value.line == 3


# ---------------------------------------------------------------- vectors


def load_vectors(*args, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """The training rows and their found flags (what these tests check of ``PretrainedVectors``)."""
    vectors = read_vectors(*args, **kwargs)
    return vectors.matrix, vectors.found

VOCAB = Vocab([PAD, UNK, "the", "Paris", "zzz"])
GLOVE = "the 0.1 0.2 0.3\nparis 1 2 3\n, 0 0 0\n"


def test_glove_text(tmp_path: Path) -> None:
    path = tmp_path / "glove.txt"
    path.write_text(GLOVE)
    matrix, found = load_vectors(path, VOCAB)
    assert matrix.shape == (5, 3) and matrix.dtype == torch.float32
    assert int(found.sum()) == 2  # "the" exactly, "Paris" through "paris"
    assert torch.allclose(matrix[2], torch.tensor([0.1, 0.2, 0.3]))
    assert torch.equal(matrix[3], torch.tensor([1.0, 2.0, 3.0]))
    assert torch.equal(matrix[0], torch.zeros(3))


def test_unfound_rows_are_deterministic_small_noise(tmp_path: Path) -> None:
    path = tmp_path / "glove.txt"
    path.write_text(GLOVE)
    first, _ = load_vectors(path, VOCAB)
    second, _ = load_vectors(path, VOCAB)
    assert torch.equal(first, second)
    assert 0 < first[4].abs().max() < 1  # "zzz" kept its N(0, 0.1) init
    assert not torch.equal(first[1], torch.zeros(3))


def test_exact_match_beats_lowercase_whatever_the_order(tmp_path: Path) -> None:
    path = tmp_path / "glove.txt"
    path.write_text("paris 1 1\nParis 2 2\nparis 3 3\n")
    matrix, found = load_vectors(path, Vocab([PAD, UNK, "Paris", "paris", "PARIS"]))
    assert int(found.sum()) == 3
    assert matrix[2].tolist() == [2, 2]  # exact
    assert matrix[3].tolist() == [1, 1]  # exact, first of duplicates wins
    assert matrix[4].tolist() == [1, 1]  # lowercase fallback


def test_word2vec_header_and_trailing_space(tmp_path: Path) -> None:
    path = tmp_path / "vectors.vec"
    path.write_text("3 2\nthe 0.5 -0.5 \nzzz 1e-1 2.5 \nother 0 0 \n")
    matrix, found = load_vectors(path, VOCAB, dim=2)
    assert int(found.sum()) == 2 and matrix.shape == (5, 2)
    assert matrix[4].tolist() == pytest.approx([0.1, 2.5])


def test_gzip_detected_by_content(tmp_path: Path) -> None:
    for name in ("glove.txt.gz", "renamed.txt"):
        path = tmp_path / name
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            handle.write(GLOVE)
        matrix, found = load_vectors(path, VOCAB)
        assert int(found.sum()) == 2 and torch.equal(matrix[3], torch.tensor([1.0, 2.0, 3.0]))


def test_words_with_spaces_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "glove.txt"
    path.write_text("the 1 1\n. . . 2 2\nzzz 3 3\n")
    matrix, found = load_vectors(path, VOCAB)
    assert int(found.sum()) == 2 and matrix[4].tolist() == [3, 3]


def test_dim_mismatch_error(tmp_path: Path) -> None:
    path = tmp_path / "glove.txt"
    path.write_text(GLOVE)
    with pytest.raises(UserError) as info:
        load_vectors(path, VOCAB, dim=300)
    assert info.value.line == 1
    assert "vectors have 3 dims but model.words.dim is 300" in info.value.message


@pytest.mark.parametrize(
    "content, line, needle",
    [
        ("the 1 2 3\nzzz 1 2\n", 2, "row has 2 values, expected 3"),
        ("the 1 2 3\nzzz 1 x 3\n", 2, "'x' is not a number"),
        ("2 3\nthe 1 2 3\nzzz 1 nan 3\n", 3, "NaN"),
        ("the\n", 1, "no values"),
    ],
)
def test_bad_row_names_the_line(tmp_path: Path, content: str, line: int, needle: str) -> None:
    path = tmp_path / "glove.txt"
    path.write_text(content)
    with pytest.raises(UserError) as info:
        load_vectors(path, VOCAB)
    assert info.value.line == line and needle in info.value.message


def test_missing_empty_and_truncated_vector_files(tmp_path: Path) -> None:
    with pytest.raises(UserError) as info:
        load_vectors(tmp_path / "nope.txt", VOCAB)
    assert "no such" in info.value.message
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(UserError):
        load_vectors(tmp_path / "empty.txt", VOCAB)
    data = gzip.compress(GLOVE.encode() * 50)
    (tmp_path / "cut.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError) as info:
        load_vectors(tmp_path / "cut.gz", VOCAB)
    assert "damaged or truncated" in info.value.message


def test_vector_coverage_counts_running_tokens(tmp_path: Path) -> None:
    path = tmp_path / "glove.txt"
    path.write_text(GLOVE)
    _, found = load_vectors(path, VOCAB)  # "the" and "Paris" have vectors, "zzz" not
    tokens = ["the", "the", "Paris", "zzz", "never-seen"]  # the unseen word is <unk>: not covered
    assert vector_coverage(tokens, VOCAB, found) == (3, 5)
    assert vector_coverage([], VOCAB, found) == (0, 0)
