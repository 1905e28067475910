"""Steps from words to encoder inputs that ``data.batching``'s collator and ``data.store`` use: subword
alignment, long-sentence windows and document context (torch-free, like the collator itself).
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence


class SubwordAligner:
    """Maps words to subword ids, one tokenizer call per batch of unseen words (cached)."""

    def __init__(self, tokenizer: Any, max_pieces_per_word: int, unk_id: Optional[int] = None,
                 cache_size: int = 500_000) -> None:
        """``unk_id``: the id of a word with no subword (default: the tokenizer's unknown token, else 0)."""
        self.tokenizer = tokenizer
        self.backend = plain_backend(tokenizer)
        self.max_pieces = max_pieces_per_word
        if unk_id is None:
            unk_id = tokenizer.unk_token_id if tokenizer.unk_token_id is not None else 0
        self.unk = unk_id
        self.cache: dict[str, list[int]] = {}
        self.cache_size = cache_size

    def pieces(self, sentences: Sequence[Sequence[str]]) -> list[list[list[int]]]:
        """Subword ids for every word of every sentence; never an empty list for a word."""
        new = list({w for s in sentences for w in s if w not in self.cache})
        if new:
            if len(self.cache) + len(new) > self.cache_size:
                self.cache.clear()  # bounded memory on endless prediction streams
            # One word per "sentence" with is_split_into_words: each word is tokenized as it would be
            # inside a sentence (prefix space), and the result does not depend on its neighbours.
            ids = word_ids(self.tokenizer, self.backend, new)
            for word, ids_of_word in zip(new, ids):
                self.cache[word] = list(ids_of_word[: self.max_pieces]) or [self.unk]
        return [[self.cache[w] for w in s] for s in sentences]


def plain_backend(tokenizer: Any) -> Any:
    """The Rust ``tokenizers.Tokenizer`` of a fast tokenizer, that encodes one word as the tokenizer does for
    that word alone: a private copy without the padding and truncation a published ``tokenizer.json`` may fix
    for whole inputs (all-MiniLM-L6-v2 ships ``Fixed(128)`` padding, which made every word 128 ids); the
    backend itself when it sets neither. Special tokens of the post-processor are left out by the call
    (``add_special_tokens=False``); the normaliser, pre-tokeniser, added tokens and model are the tokenizer's
    own. None for a slow tokenizer (or a backend that cannot be copied): the transformers call then pads and
    truncates only on request."""
    backend = getattr(tokenizer, "backend_tokenizer", None) if getattr(tokenizer, "is_fast", False) else None
    if backend is None:
        backend = tokenizer if type(tokenizer).__module__.startswith("tokenizers") else None
    if backend is None:
        return None
    if backend.padding is None and backend.truncation is None:
        return backend  # nothing to undo: the copy (~0.1 s for a 30k vocabulary) is saved at start-up
    from tokenizers import Tokenizer

    try:
        plain = Tokenizer.from_str(backend.to_str())
    except Exception:  # a component written in Python (custom pre-tokeniser) does not serialise
        return None
    plain.no_padding()
    plain.no_truncation()
    return plain


def word_ids(tokenizer: Any, backend: Any, words: list[str]) -> list[list[int]]:
    """Subword ids of each word, tokenised as one pre-split word (``is_split_into_words``) without special
    tokens. ``backend`` (from :func:`plain_backend`) is called directly when there is one: the transformers
    wrapper turns every result into a Python dict first, which costs more than the tokenisation (0.46 of
    0.8 s on CoNLL-2003's 23k words)."""
    if backend is None:
        return tokenizer([[w] for w in words], is_split_into_words=True, add_special_tokens=False)["input_ids"]
    return [e.ids for e in backend.encode_batch([[w] for w in words], is_pretokenized=True,
                                                add_special_tokens=False)]


def neighbour_context(n: int, count: int, flat: Callable[[int], list[int]], documents: Optional[Sequence[int]],
                      context: int) -> tuple[list[int], list[int]]:
    """The nearest ``context`` subwords before and after sentence ``n`` of ``count`` that share its
    document (``documents[k]``; one document when None); ``flat(k)``: sentence ``k``'s subword ids."""
    same = (lambda k: True) if documents is None else (lambda k: documents[k] == documents[n])  # noqa: E731
    left: list[int] = []
    k = n - 1
    while k >= 0 and same(k) and len(left) < context:
        left = flat(k)[-(context - len(left)):] + left
        k -= 1
    right: list[int] = []
    k = n + 1
    while k < count and same(k) and len(right) < context:
        right += flat(k)[: context - len(right)]
        k += 1
    return left, right


def plan_windows(lengths: Sequence[int], content: int, stride: int) -> tuple[list[tuple[int, int]], list[int]]:
    """Split words with ``lengths`` subwords into windows of at most ``content`` subwords.

    Returns the windows as word ranges [start, end) and, for every word, the index of the window it is
    read from. Consecutive windows share about ``stride`` subwords of context. Each length must be
    <= content (callers cap subwords per word).
    """
    n = len(lengths)
    stride = max(0, min(stride, content // 2))
    windows: list[tuple[int, int]] = []
    start = 0
    while True:
        end, total = start, 0
        while end < n and total + lengths[end] <= content:
            total += lengths[end]
            end += 1
        windows.append((start, end))
        if end >= n:
            break
        # Step back for shared context, but never so far that the next window could not reach a new word.
        room = min(stride, content - lengths[end])
        nxt, overlap = end, 0
        while nxt - 1 > start and overlap + lengths[nxt - 1] <= room:
            nxt -= 1
            overlap += lengths[nxt]
        start = nxt
    owner = [0] * n
    best = [-1] * n
    for w, (s, e) in enumerate(windows):
        total = sum(lengths[s:e])
        left = 0
        for t in range(s, e):
            score = min(left, total - left - lengths[t])  # context on the poorer side
            if score > best[t]:
                best[t], owner[t] = score, w
            left += lengths[t]
    return windows, owner


def fit_context(left: list[int], right: list[int], room: int) -> tuple[list[int], list[int]]:
    """The parts of ``left`` (its end) and ``right`` (its start) that fit in ``room`` subwords, shared
    evenly; a side that needs less leaves the rest to the other."""
    take_left = min(len(left), max(room // 2, room - len(right)))
    take_right = min(len(right), room - take_left)
    return left[len(left) - take_left:], right[:take_right]
