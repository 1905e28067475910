"""Input shapes that read without error but wrongly, recognised and explained; torch-free.

Each rule is a plain function over what a reader already holds, so the readers stay streaming:

- ``looks_like_tag(value)``: a tag (``O``, ``B-PER``), the unknown tag ``?``, or a placeholder ``_`` / ``-``.
- ``comment_line(fields, width, label, tags)``: whether a line starting with ``#`` is a comment (MultiCoNER's
  ``# id ... domain=en``, CoNLL-U's ``# text = ...``) rather than a token line whose token is ``#``: it is a
  token line only when it has the file's column count and, where the file's label column holds tags, a
  tag in that column (CoNLL-2003's ``# # I-NP O``), and it is not CoNLL-U's ``# key = value``.
- ``text_like(fields)``: whether ONE token line that makes a whole sentence reads as a line of raw text:
  two or more fields whose last is neither a tag nor a short code (a POS ``NNP``, a chunk ``I-NP``; a word of
  text holds lowercase letters) or four or more fields whose last is no tag; or one field of 8 or more
  characters of a script written without spaces (Chinese text). ``data.conll.refuse_text`` refuses a file
  whose first sentence is such a line and whose next sentence is another or the end of the file.
- ``all_tags(values)`` / ``tag_columns(columns, skip)``: tags only, in a token column (a label-first file
  read with the tokens first: prediction warns) or in another than the label column (training's hint).
- ``script_mismatch(tokens, tokenizer)``: raw text that the word tokeniser cannot split (a long run of
  Chinese under ``conll``/``whitespace``) or splits into letters (Latin text under ``chars``).
- ``unk_share(sentences, pieces, unk)``: the share of words whose subwords hold the encoder's unknown id.
"""
from __future__ import annotations

from typing import Iterable, Optional, Sequence

from .schemes import UNKNOWN, tag_problem
from .text import _unsegmented as unsegmented  # the rule data.word_tokenizer auto decides by

UNSEGMENTED_RUN = 8   # characters of a space-less script in one token: text, not a word
UNK_WARN_SHARE = 0.05  # training words the encoder reads as <unk> above which training warns
_CODE_LENGTH = 6      # a POS or chunk code is short and has no lowercase letter (NNP, PROPN, I-NP, $, ``)


def looks_like_tag(value: str) -> bool:
    """A tag of some scheme, the unknown tag, or an empty-column placeholder."""
    return value in (UNKNOWN, "_", "-") or tag_problem(value) is None


def _code(value: str) -> bool:
    return looks_like_tag(value) or (len(value) <= _CODE_LENGTH and not any(c.islower() for c in value))


def comment_line(fields: Sequence[str], width: int, label: Optional[int], tags: bool) -> bool:
    """Whether a line starting with ``#`` is a comment: see the module docstring. ``width``: the file's
    column count (0: unknown yet); ``label``: its label column (None: a single column); ``tags``: whether
    that column holds tags in the file's first token line."""
    if len(fields) >= 3 and fields[0] == "#" and fields[2] == "=":
        return True  # CoNLL-U: # sent_id = 1, # text = ...
    if len(fields) != width:
        return True
    return tags and label is not None and not looks_like_tag(fields[label])


def text_like(fields: Sequence[str]) -> bool:
    """Whether one token line that makes a whole sentence is a line of raw text (module docstring)."""
    if len(fields) == 1:
        return sum(map(unsegmented, fields[0])) >= UNSEGMENTED_RUN
    last = fields[-1]
    return not _code(last) or (len(fields) >= 4 and not looks_like_tag(last))


def all_tags(values: Sequence[str]) -> bool:
    """Every value is a tag and some is an entity tag (a column of ``O`` alone or of placeholders tells nothing)."""
    return all(tag_problem(v) is None for v in values) and any(v != "O" for v in values)


def tag_columns(columns: Sequence[Sequence[str]], skip: int) -> list[int]:
    """The columns (besides ``skip``) in which ``all_tags`` holds for ``columns`` (one row per token)."""
    width = min(map(len, columns), default=0)
    return [c for c in range(width) if c != skip and all_tags([row[c] for row in columns])]


def script_mismatch(tokens: Iterable[str], tokenizer: str) -> Optional[str]:
    """Why ``tokenizer`` splits these tokens wrongly (one line, with the fix), or None: a token holding a
    run of a space-less script under ``conll``/``whitespace``, or Latin words cut into letters by ``chars``."""
    tokens = list(tokens)
    if tokenizer == "chars":
        letters = [t for t in tokens if t.isalpha() and not unsegmented(t)]
        if len(tokens) >= 20 and len(letters) * 2 > len(tokens):
            return (f"{len(letters)} of {len(tokens)} tokens are single letters of a script written with spaces: "
                    "word_tokenizer chars cut its words into letters; pass --word-tokenizer conll (or use a model "
                    "trained on that language)")
        return None
    long = next((t for t in tokens if sum(map(unsegmented, t)) >= UNSEGMENTED_RUN), None)
    if long is None:
        return None
    shown = long if len(long) <= 12 else long[:12] + "..."
    return (f"the token {shown!r} ({len(long)} characters) is text in a script written without spaces, which "
            f"word_tokenizer {tokenizer} leaves whole; pass --word-tokenizer chars (or use a model trained on that "
            "script)")


def unk_share(sentences: Iterable[Sequence[str]], pieces: Iterable[Sequence[Sequence[int]]],
              unk: int) -> tuple[int, int, list[str]]:
    """``(words read as <unk>, words, up to 5 examples)``: a word counts when any of its subwords is ``unk``."""
    unknown, total, examples = 0, 0, []
    for words, word_pieces in zip(sentences, pieces):
        for word, ids in zip(words, word_pieces):
            total += 1
            if unk in ids:
                unknown += 1
                if len(examples) < 5 and word not in examples:
                    examples.append(word)
    return unknown, total, examples
