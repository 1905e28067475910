"""The CoNLL reader and writer: every edge case a user's file may have."""
from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ner_toolkit.data.conll import (
    Passthrough,
    Sentence,
    format_passthrough,
    format_sentence,
    read_conll,
    read_sentences,
)
from ner_toolkit.errors import UserError


def write(tmp_path: Path, data: str | bytes, name: str = "data.conll") -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def round_trip(path: Path) -> str:
    out = []
    for item in read_conll(path):
        out.append(format_sentence(item, []) if isinstance(item, Sentence) else format_passthrough(item))
    return "".join(out)


def test_two_columns_tokens_labels_and_line_numbers(tmp_path: Path) -> None:
    path = write(tmp_path, "EU B-ORG\nrejects O\n\nPeter B-PER\n")
    first, blank, second = read_conll(path)
    assert isinstance(first, Sentence) and isinstance(second, Sentence)
    assert first.tokens == ["EU", "rejects"] and first.labels == ["B-ORG", "O"]
    assert first.line_numbers == [1, 2] and second.line_numbers == [4]
    assert blank == Passthrough("", 3)
    assert first.columns == [["EU", "B-ORG"], ["rejects", "O"]]
    assert first.separator == " "


def test_single_column_has_no_labels(tmp_path: Path) -> None:
    [sentence] = read_sentences(write(tmp_path, "EU\nrejects\n"))
    assert sentence.tokens == ["EU", "rejects"] and sentence.labels is None


def test_four_columns_default_takes_first_and_last(tmp_path: Path) -> None:
    [sentence] = read_sentences(write(tmp_path, "EU NNP B-NP B-ORG\nrejects VBZ B-VP O\n"))
    assert sentence.tokens == ["EU", "rejects"]
    assert sentence.labels == ["B-ORG", "O"]
    assert sentence.columns[0] == ["EU", "NNP", "B-NP", "B-ORG"]


def test_configurable_columns(tmp_path: Path) -> None:
    path = write(tmp_path, "1\tEU\tB-ORG\tx\n2\trejects\tO\ty\n")
    [sentence] = read_sentences(path, token_column=1, label_column=-2)
    assert sentence.tokens == ["EU", "rejects"] and sentence.labels == ["B-ORG", "O"]
    assert sentence.separator == "\t"


def test_column_out_of_range_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "\nEU B-ORG\n")
    with pytest.raises(UserError) as info:
        read_sentences(path, label_column=5)
    assert info.value.line == 2 and "label column 5" in info.value.message


def test_mixed_runs_of_spaces_and_tabs(tmp_path: Path) -> None:
    [sentence] = read_sentences(write(tmp_path, "EU  \t NNP\tB-ORG\n"))
    assert sentence.columns == [["EU", "NNP", "B-ORG"]]
    assert sentence.separator == "\t"


def test_non_ascii_spaces_stay_inside_tokens(tmp_path: Path) -> None:
    [sentence] = read_sentences(write(tmp_path, "a\u00a0b O\n\u3000 O\n"))
    assert sentence.tokens == ["a\u00a0b", "\u3000"]


def test_docstart_is_passthrough_and_ends_a_sentence(tmp_path: Path) -> None:
    text = "-DOCSTART- -X- O\n\nEU B-ORG\n-DOCSTART- -X- -X- O\nPeter B-PER\n"
    items = list(read_conll(write(tmp_path, text)))
    kinds = [type(item).__name__ for item in items]
    assert kinds == ["Passthrough", "Passthrough", "Sentence", "Passthrough", "Sentence"]
    assert items[0].line == "-DOCSTART- -X- O"  # does not fix the column count either
    assert [s.tokens for s in items if isinstance(s, Sentence)] == [["EU"], ["Peter"]]


def test_every_separator_line_is_yielded_verbatim(tmp_path: Path) -> None:
    text = "\n\nEU B-ORG\n\n \t\n\t\n\nPeter B-PER\n\n"
    items = list(read_conll(write(tmp_path, text)))
    passthrough = [(p.line, p.line_number) for p in items if isinstance(p, Passthrough)]
    assert passthrough == [("", 1), ("", 2), ("", 4), (" \t", 5), ("\t", 6), ("", 7), ("", 9)]
    assert len(read_sentences(write(tmp_path, text))) == 2
    assert round_trip(write(tmp_path, text)) == text


def test_crlf_and_bom(tmp_path: Path) -> None:
    path = write(tmp_path, b"\xef\xbb\xbfEU B-ORG\r\nrejects O\r\n\r\nPeter B-PER\r\n")
    first, blank, second = read_conll(path)
    assert first.tokens == ["EU", "rejects"] and first.lines == ["EU B-ORG", "rejects O"]
    assert blank.line == "" and second.labels == ["B-PER"]


def test_bom_before_docstart(tmp_path: Path) -> None:
    items = list(read_conll(write(tmp_path, b"\xef\xbb\xbf-DOCSTART- O\n\nEU O\n")))
    assert items[0] == Passthrough("-DOCSTART- O", 1)


def test_no_trailing_newline(tmp_path: Path) -> None:
    items = list(read_conll(write(tmp_path, "EU B-ORG\n\nPeter B-PER")))
    assert isinstance(items[-1], Sentence) and items[-1].tokens == ["Peter"]


def test_empty_file(tmp_path: Path) -> None:
    assert list(read_conll(write(tmp_path, ""))) == []


def test_invalid_utf8_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, b"EU B-ORG\nre\xffjects O\n")
    with pytest.raises(UserError) as info:
        read_sentences(path)
    assert info.value.line == 2 and "UTF-8" in info.value.message
    assert str(info.value).startswith(f"error: {path}:2: invalid UTF-8")


def test_column_count_change_names_line_and_counts(tmp_path: Path) -> None:
    path = write(tmp_path, "EU NNP B-ORG\n\nrejects O\n")
    with pytest.raises(UserError) as info:
        read_sentences(path)
    assert info.value.line == 3
    assert "expected 3 columns as on line 1, found 2" in info.value.message


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_missing_path_is_a_user_error_at_call_time(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "nope.conll"
    if kind == "directory":
        path.mkdir()
    with pytest.raises(UserError) as info:
        read_conll(path)  # before any next(): callers can check inputs early
    assert info.value.path == str(path) and info.value.line is None


def test_round_trip_lf_file_is_exact(tmp_path: Path) -> None:
    text = "-DOCSTART- -X- -X- O\n\nEU NNP  B-ORG \nrejects\tVBZ O\n \n\nPeter NNP B-PER\n"
    assert round_trip(write(tmp_path, text)) == text


def test_format_sentence_appends_with_the_file_separator(tmp_path: Path) -> None:
    [tabbed] = read_sentences(write(tmp_path, "EU\tB-ORG\nrejects\tO\t\n", "a.tsv"))
    assert format_sentence(tabbed, [["B-ORG", "O"]]) == "EU\tB-ORG\tB-ORG\nrejects\tO\tO\n"
    [spaced] = read_sentences(write(tmp_path, "EU B-ORG\nrejects O\n", "b.txt"))
    out = format_sentence(spaced, [["B-ORG", "O"], ["0.9", "1.0"]])
    assert out == "EU B-ORG B-ORG 0.9\nrejects O O 1.0\n"


def test_format_sentence_rejects_a_short_column(tmp_path: Path) -> None:
    [sentence] = read_sentences(write(tmp_path, "EU B-ORG\nrejects O\n"))
    with pytest.raises(ValueError):
        format_sentence(sentence, [["O"]])


def test_token_count_in_equals_token_count_out(tmp_path: Path) -> None:
    text = "".join(f"w{i} O\n" + ("\n" if i % 7 == 6 else "") for i in range(100))
    path = write(tmp_path, text)
    out_path = tmp_path / "out.conll"
    with out_path.open("w", encoding="utf-8") as out:
        for item in read_conll(path):
            if isinstance(item, Sentence):
                out.write(format_sentence(item, [["O"] * len(item.tokens)]))
            else:
                out.write(format_passthrough(item))
    tokens_out = sum(len(s.tokens) for s in read_sentences(out_path))
    assert tokens_out == 100
    assert all(len(c) == 3 for s in read_sentences(out_path) for c in s.columns)


_field = st.text(alphabet=st.characters(blacklist_characters=" \t\n\r\f\v\x1c\x1d\x1e\x85\u2028\u2029",
                                         blacklist_categories=("Cs",)), min_size=1, max_size=6)


@st.composite
def conll_files(draw: st.DrawFn) -> str:
    n_columns = draw(st.integers(1, 4))
    sep = draw(st.sampled_from([" ", "\t", "  ", " \t"]))
    lines = []
    for _ in range(draw(st.integers(0, 12))):
        kind = draw(st.sampled_from(["token", "token", "token", "blank", "docstart"]))
        if kind == "token":
            fields = draw(st.lists(_field, min_size=n_columns, max_size=n_columns))
            if fields[0] == "-DOCSTART-":
                fields[0] = "x"
            lines.append(sep.join(fields) + draw(st.sampled_from(["", " ", "\t"])))
        elif kind == "blank":
            lines.append(draw(st.sampled_from(["", " ", "\t", " \t "])))
        else:
            lines.append("-DOCSTART- -X- O")
    text = "\n".join(lines)
    return text + "\n" if lines and draw(st.booleans()) else text


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=conll_files())
def test_random_files_round_trip(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text, "prop.conll")
    expected = text if text.endswith("\n") or not text else text + "\n"
    assert round_trip(path) == expected
    # the line numbers tile the file exactly once, in order
    numbers: list[int] = []
    for item in read_conll(path):
        numbers.extend(item.line_numbers if isinstance(item, Sentence) else [item.line_number])
    assert numbers == list(range(1, len(expected.splitlines()) + 1))
