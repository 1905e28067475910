"""Raw text <-> tokens with offsets (ner_toolkit.data.text): what a user feeding raw text relies on.

Property tests check, for every tokenizer, that offsets are ordered, non-overlapping, whitespace-free
and cover every non-whitespace character exactly once (nothing dropped), over text with odd
whitespace, unicode and the punctuation the Treebank rules rewrite. Exact cases pin down the
CoNLL-2003-style tokenisation and the char-span -> token-span alignment.
"""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ner_toolkit.data.schemes import to_spans
from ner_toolkit.data.text import (
    TOKENIZERS,
    Document,
    align_spans,
    bio_tags,
    detect_tokenizer,
    get_tokenizer,
    join_tokens,
    token_spans_to_chars,
    tokenize,
)

PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

WHITESPACE = [" ", "  ", "   ", "\t", "\n", "\r\n", "\u00a0", "\u3000", "\u2003", "\x0b", "\x0c", " \t\n "]
WORDS = [
    "Germany", "rep.", "Mr.", "U.S.", "U.S", "didn't", "can't", "cannot", "gonna", "it's", "'s", "n't", "O'Neil",
    "well-known", "1,234.5", "3.5", "1996-08-22", "café", "naïve", "cafe\u0301", "e\u0308\u0301", "\u0301",
    "北京", "東京タワー", "ひらがな", "😀", "👍🏽", "👨‍👩‍👧", "שלום", "مرحبا", "\u200f", "\u200b", "a.", "x", "A",
    "Zürich", "İstanbul", "ß", "ﬁ", "Ⅻ", "½", "..", "etc.", "Inc.", "e.g.", "F.C.", "(U.S.)", "3.", "12.", "C$",
    "US$15", "S&P", "AT&T", "cannot", "CANNOT", "---", "**", "------",
]
PUNCT = ['"', "'", "`", "``", "''", ",", ".", "!", "?", "(", ")", "-", "--", "...", "$", "%", "&", "[", "]",
         "{", "}", "<", ">", ";", ":", "/", "\\", "“", "”", "‘", "’", "«", "»", "„", "…", "#", "@", "*"]

piece = st.one_of(st.sampled_from(WORDS), st.sampled_from(PUNCT), st.sampled_from(WHITESPACE),
                  st.text(max_size=4))
odd_text = st.lists(piece, max_size=25).map("".join)


def assert_well_formed(text: str, offsets) -> None:
    previous_end = 0
    covered = [0] * len(text)
    for start, end in offsets:
        assert previous_end <= start < end <= len(text), (offsets, text)
        token = text[start:end]
        assert token and not any(ch.isspace() for ch in token), (token, text)
        for i in range(start, end):
            covered[i] += 1
        previous_end = end
    for i, ch in enumerate(text):
        assert covered[i] == (0 if ch.isspace() else 1), (i, ch, text, offsets)


# ---------------------------------------------------------------------------- every tokenizer

@pytest.mark.parametrize("name", TOKENIZERS)
@PROPERTY
@given(text=odd_text)
def test_offsets_cover_every_character_once(name, text):
    tokens, offsets = tokenize(text, name)
    assert_well_formed(text, offsets)
    assert tokens == [text[s:e] for s, e in offsets]
    assert tokenize(text, name) == (tokens, offsets)  # deterministic


@pytest.mark.parametrize("name", TOKENIZERS)
@PROPERTY
@given(text=st.text(max_size=60))
def test_offsets_cover_arbitrary_unicode(name, text):
    assert_well_formed(text, tokenize(text, name)[1])


@pytest.mark.parametrize("name", TOKENIZERS)
@pytest.mark.parametrize("text", ["", " ", "\n\t\u00a0\u3000\u2003  "])
def test_empty_and_blank_text_has_no_tokens(name, text):
    assert tokenize(text, name) == ([], [])


def test_whitespace_tokenizer_splits_unicode_whitespace():
    text = "a\u00a0b\u3000c\u2003d\te\nf  g"
    assert tokenize(text, "whitespace") == (list("abcdefg"), [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9), (10, 11),
                                                                (13, 14)])
    assert tokenize("U.S. (rep.)", "whitespace")[0] == ["U.S.", "(rep.)"]


def test_unknown_tokenizer_is_rejected():
    with pytest.raises(ValueError, match="unknown word tokenizer 'spacy'"):
        get_tokenizer("spacy")


# ---------------------------------------------------------------------------- conll

def conll(text):
    return tokenize(text, "conll")[0]


def test_conll_clitics_and_abbreviation():
    text = "Germany's rep. didn't say"
    tokens, offsets = tokenize(text, "conll")
    assert tokens == ["Germany", "'s", "rep.", "did", "n't", "say"]
    assert offsets == [(0, 7), (7, 9), (10, 14), (15, 18), (18, 21), (22, 25)]


@pytest.mark.parametrize("text, expected", [
    ("The U.S. said.", ["The", "U.S.", "said", "."]),
    ("Officials in the U.S. and U.K. agreed.", ["Officials", "in", "the", "U.S.", "and", "U.K.", "agreed", "."]),
    ("Mr. Smith went to Washington.", ["Mr.", "Smith", "went", "to", "Washington", "."]),
    ("It rose 1,234.5 points, or 3.5 percent.", ["It", "rose", "1,234.5", "points", ",", "or", "3.5", "percent", "."]),
    ("A well-known Anglo-Dutch group.", ["A", "well-known", "Anglo-Dutch", "group", "."]),
    ("BRUSSELS 1996-08-22", ["BRUSSELS", "1996-08-22"]),
    ("They're sure we'll win!", ["They", "'re", "sure", "we", "'ll", "win", "!"]),
    ("Was it (really) 5%?", ["Was", "it", "(", "really", ")", "5", "%", "?"]),
    ("It cost $ 15 -- or more...", ["It", "cost", "$", "15", "--", "or", "more", "..."]),
])
def test_conll_sentences(text, expected):
    assert conll(text) == expected


def test_conll_two_sentences_each_final_period_split():
    text = "He came home. She left early."
    tokens, offsets = tokenize(text, "conll")
    assert tokens == ["He", "came", "home", ".", "She", "left", "early", "."]
    assert offsets[3] == (12, 13) and offsets[-1] == (28, 29)


def test_conll_sentence_final_abbreviation_sentence():
    assert conll("The company is based in the U.S. It grew.")[:7] == ["The", "company", "is", "based", "in", "the",
                                                                       "U.S."]


@pytest.mark.parametrize("text, expected", [
    # Dotted initials are abbreviations, not sentence ends (CoNLL-2003 keeps F.C. whole).
    ("SOCCER - GLORIA BISTRITA BEAT 2-1 F.C. VALLETTA.", ["SOCCER", "-", "GLORIA", "BISTRITA", "BEAT", "2-1", "F.C.",
                                                         "VALLETTA", "."]),
    ("F.C. La Valletta - Gilbert Agius (24th)", ["F.C.", "La", "Valletta", "-", "Gilbert", "Agius", "(", "24th", ")"]),
    # A list number at the start is one token, as in CoNLL-2003 result lists.
    ("3. Hever Golf Rose 11-4 (Jason Weaver)", ["3.", "Hever", "Golf", "Rose", "11-4", "(", "Jason", "Weaver", ")"]),
    ("It was 1996. 2. Jones", ["It", "was", "1996", ".", "2.", "Jones"]),
    # An abbreviation's period before a final closing bracket stays with it.
    ("Alex O'Brien (U.S.)", ["Alex", "O'Brien", "(", "U.S.", ")"]),
    ("Go to Washington (D.C.).", ["Go", "to", "Washington", "(", "D.C.", ")", "."]),
    ("He said (really.)", ["He", "said", "(", "really", ".", ")"]),
    ("He lives in the U.S.", ["He", "lives", "in", "the", "U.S", "."]),  # sentence-final: as CoNLL-2003 (U.S .)
])
def test_conll_abbreviations_and_list_numbers(text, expected):
    assert conll(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("C$1.5 billion and A$ 20", ["C$", "1.5", "billion", "and", "A$", "20"]),
    ("HK$ 3 or US$3 or $ 5", ["HK$", "3", "or", "US$", "3", "or", "$", "5"]),
    ("S&P and AT&T rose & fell", ["S&P", "and", "AT&T", "rose", "&", "fell"]),
    ("We cannot say", ["We", "cannot", "say"]),
    ("--- a -- b ** c", ["---", "a", "--", "b", "**", "c"]),
])
def test_conll_keeps_conll2003_wholes(text, expected):
    assert conll(text) == expected


def test_conll_long_dash_rule_is_split_in_pieces_but_covered():
    text = "a " + "-" * 100 + " b"
    tokens, offsets = tokenize(text, "conll")
    assert_well_formed(text, offsets)
    assert tokens[0] == "a" and tokens[-1] == "b" and all(set(t) == {"-"} for t in tokens[1:-1])
    assert len(tokens) < 10


def test_conll_double_quotes_keep_real_offsets():
    text = 'He said "quoted" here.'
    tokens, offsets = tokenize(text, "conll")
    assert tokens == ["He", "said", '"', "quoted", '"', "here", "."]
    assert offsets[2] == (8, 9) and offsets[4] == (15, 16)
    assert text[8] == text[15] == '"'


def test_conll_treebank_quote_marks_in_text():
    text = "''a'' ``b"
    tokens, offsets = tokenize(text, "conll")
    assert tokens == ["''", "a", "''", "``", "b"]
    assert offsets == [(0, 2), (2, 3), (3, 5), (6, 8), (8, 9)]
    assert conll('"Hi," he said.') == ['"', "Hi", ",", '"', "he", "said", "."]


def test_conll_odd_whitespace_between_tokens():
    text = "Germany\u00a0's\trep.\n\ndidn't\u3000say ."
    tokens, offsets = tokenize(text, "conll")
    assert_well_formed(text, offsets)
    assert "rep." in tokens and "say" in tokens


# ---------------------------------------------------------------------------- chars

def test_chars_chinese():
    text = "我爱北京天安门。"
    tokens, offsets = tokenize(text, "chars")
    assert tokens == list(text)
    assert offsets == [(i, i + 1) for i in range(len(text))]


def test_chars_mixed_with_spaces():
    text = "中国 人民\u3000银行 AB"
    tokens, offsets = tokenize(text, "chars")
    assert tokens == ["中", "国", "人", "民", "银", "行", "A", "B"]
    assert offsets == [(0, 1), (1, 2), (3, 4), (4, 5), (6, 7), (7, 8), (9, 10), (10, 11)]


# ---------------------------------------------------------------------------- join_tokens / Document

def test_join_tokens_offsets():
    text, offsets = join_tokens(["EU", "rejects", "German", "call"])
    assert text == "EU rejects German call"
    assert offsets == [(0, 2), (3, 10), (11, 17), (18, 22)]
    assert join_tokens([]) == ("", [])


def test_document_from_text_and_tokens():
    doc = Document.from_text("Mr. Smith left.", "conll", line=3, fields={"id": 1})
    assert doc.tokens == ["Mr.", "Smith", "left", "."] and len(doc) == 4
    assert doc.line == 3 and doc.fields == {"id": 1} and doc.labels is None
    doc = Document.from_tokens(["EU", "rejects"], ["B-ORG", "O"])
    assert doc.text == "EU rejects" and doc.offsets == [(0, 2), (3, 10)] and doc.labels == ["B-ORG", "O"]


# ---------------------------------------------------------------------------- align_spans

TEXT = "Angela Merkel visited New York City ."
OFFSETS = tokenize(TEXT, "whitespace")[1]  # Angela 0-6, Merkel 7-13, visited 14-21, New 22-25, York 26-30, City 31-35


def test_align_exact_spans():
    result = align_spans([(22, 35, "LOC"), (0, 13, "PER")], OFFSETS, "skip", TEXT)
    assert result.spans == [("PER", 0, 2), ("LOC", 3, 6)]
    assert result.expanded == [] and result.skipped == []
    assert token_spans_to_chars(result.spans, OFFSETS) == [("PER", 0, 13), ("LOC", 22, 35)]


def test_align_trims_whitespace():
    result = align_spans([(21, 31, "LOC"), (6, 13, "PER")], OFFSETS, "skip", TEXT)  # " New York ", " Merkel"
    assert result.spans == [("PER", 1, 2), ("LOC", 3, 5)]
    assert result.skipped == [] and result.expanded == []


@pytest.mark.parametrize("span, tokens", [
    ((2, 13, "PER"), (0, 2)),   # starts inside "Angela"
    ((0, 10, "PER"), (0, 2)),   # ends inside "Merkel"
    ((24, 27, "LOC"), (3, 5)),  # inside both "New" and "York"
    ((8, 9, "PER"), (1, 2)),    # inside one token
])
def test_align_misaligned_expand_and_skip(span, tokens):
    start, end, label = span
    expanded = align_spans([span], OFFSETS, "expand", TEXT)
    assert expanded.spans == [(label, *tokens)]
    assert expanded.expanded == [(label, start, end)] and expanded.skipped == []
    skipped = align_spans([span], OFFSETS, "skip", TEXT)
    assert skipped.spans == [] and skipped.expanded == []
    assert skipped.skipped == [(label, start, end, "does not fall on token boundaries")]
    errored = align_spans([span], OFFSETS, "error", TEXT)
    assert errored.spans == [] and errored.skipped == skipped.skipped


@pytest.mark.parametrize("policy", ["expand", "skip"])
def test_align_span_covering_no_token(policy):
    result = align_spans([(13, 14, "X"), (5, 5, "Y"), (21, 22, "Z")], OFFSETS, policy, TEXT)
    assert result.spans == []
    assert sorted(result.skipped) == [("X", 14, 14, "covers no token"), ("Y", 5, 5, "covers no token"),
                                      ("Z", 22, 22, "covers no token")]


def test_align_overlapping_spans_keep_first_longest():
    spans = [(26, 35, "LOC"), (22, 35, "LOC"), (22, 30, "GPE"), (31, 37, "MISC")]
    result = align_spans(spans, OFFSETS, "skip", TEXT)
    assert result.spans == [("LOC", 3, 6)]
    assert result.skipped == [("GPE", 22, 30, "overlaps another span"), ("LOC", 26, 35, "overlaps another span"),
                              ("MISC", 31, 37, "overlaps another span")]


def test_align_overlap_after_expansion_is_only_skipped():
    # "erkel" expands to Merkel, which "Merkel" already holds: the span is skipped, not also "expanded".
    result = align_spans([(7, 13, "PER"), (8, 13, "PER")], OFFSETS, "expand", TEXT)
    assert result.spans == [("PER", 1, 2)]
    assert result.skipped == [("PER", 8, 13, "overlaps another span")]
    assert result.expanded == []


def test_align_with_conll_tokens():
    text = "Germany's rep. didn't say"
    offsets = tokenize(text, "conll")[1]
    result = align_spans([(0, 7, "LOC")], offsets, "skip", text)
    assert result.spans == [("LOC", 0, 1)]
    result = align_spans([(0, 9, "LOC")], offsets, "skip", text)  # "Germany's": two tokens
    assert result.spans == [("LOC", 0, 2)]


@st.composite
def text_and_spans(draw):
    text = draw(odd_text)
    n = len(text)
    spans = draw(st.lists(st.tuples(st.integers(0, n), st.integers(0, n), st.sampled_from(["PER", "LOC", "ORG"])),
                          max_size=8))
    return text, [(min(a, b), max(a, b), label) for a, b, label in spans]


def trimmed(text, start, end):
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


@pytest.mark.parametrize("name", TOKENIZERS)
@PROPERTY
@given(case=text_and_spans())
def test_align_properties(name, case):
    text, spans = case
    tokens, offsets = tokenize(text, name)
    for policy in ("expand", "skip"):
        result = align_spans(spans, offsets, policy, text)
        assert len(result.spans) + len(result.skipped) == len(spans)
        taken = set()
        kept_chars = token_spans_to_chars(result.spans, offsets)
        for (label, first, end), (_, cstart, cend) in zip(result.spans, kept_chars):
            assert 0 <= first < end <= len(offsets)
            assert not taken & set(range(first, end)), "kept spans overlap"
            taken |= set(range(first, end))
            # Some input span with this label became this token span.
            sources = [trimmed(text, s, e) for s, e, lab in spans if lab == label]
            if policy == "skip":
                assert (cstart, cend) in sources
            else:
                assert any(cstart <= s and e <= cend and s < e and offsets[first][1] > s and offsets[end - 1][0] < e
                           for s, e in sources)
        for label, start, end in result.expanded:
            assert policy == "expand"
        tags = bio_tags(result.spans, len(tokens))
        assert len(tags) == len(tokens)
        for i, tag in enumerate(tags):
            assert tag == "O" or tag[:2] in ("B-", "I-")
            if tag.startswith("I-"):
                assert i > 0 and tags[i - 1][2:] == tag[2:] and tags[i - 1] != "O"
        assert sorted(to_spans(tags, "IOB2")) == sorted(result.spans)


def test_bio_tags_exact():
    assert bio_tags([("PER", 0, 2), ("LOC", 3, 6)], 7) == ["B-PER", "I-PER", "O", "B-LOC", "I-LOC", "I-LOC", "O"]
    assert bio_tags([("LOC", 0, 1), ("LOC", 1, 2)], 2) == ["B-LOC", "B-LOC"]
    assert bio_tags([], 3) == ["O", "O", "O"]


# ---------------------------------------------------------------------------- detect_tokenizer

@pytest.mark.parametrize("samples, expected", [
    (["我爱北京天安门", "中国人民银行"], "chars"),
    (["EU rejects German call to boycott British lamb ."], "conll"),
    (["ひらがなとカタカナ", "これはペンです"], "chars"),
    (["東京タワーに行きました。"], "chars"),
    (["สวัสดีครับ"], "chars"),
    (["Peking (北京) is the capital of China, a big country."], "conll"),
    (["1996-08-22 , ."], "conll"),
    ([], "conll"),
])
def test_detect_tokenizer(samples, expected):
    assert detect_tokenizer(samples) == expected


def test_detect_tokenizer_reads_tokens_too():
    assert detect_tokenizer(["我", "爱", "北", "京"]) == "chars"
    assert detect_tokenizer(iter(["Germany", "'s", "rep."])) == "conll"
