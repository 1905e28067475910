"""``ner-pretrain tokenizer``: a SentencePiece unigram vocabulary (ALBERT's kind) trained on raw text,
saved as an HF tokenizer directory (``AlbertTokenizer.save_pretrained``) plus its ``spiece.model``.

The ids follow albert-base-v2: ``<pad>`` 0, ``<unk>`` 1, ``[CLS]`` 2, ``[SEP]`` 3, ``[MASK]`` 4. Case and
accents are kept (``do_lower_case=False``, ``keep_accents=True``): a tagger reads case as evidence of names.
"""
from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Iterator, Sequence

from ..atomic import atomic_directory
from ..errors import UserError, warn
from .data import iter_sentences

log = logging.getLogger(__name__)

SPECIALS = ["[CLS]", "[SEP]", "[MASK]"]
MAX_SENTENCES = 10_000_000  # SentencePiece samples this many sentences of a larger corpus


def _counted(sentences: Iterator[str], counter: list[int]) -> Iterator[str]:
    """The sentences, counted in ``counter``: [sentences, characters]."""
    for sentence in sentences:
        counter[0] += 1
        counter[1] += len(sentence)
        yield sentence


def train_vocabulary(inputs: Sequence[str], vocab_size: int, output: str, fmt: str = "auto", token_column: int = 0,
                     character_coverage: float = 0.99995, seed: int = 42) -> int:
    """Train a unigram SentencePiece model on every sentence of ``inputs`` and write the tokenizer
    directory ``output`` atomically; returns the vocabulary size (SentencePiece may stop short of
    ``vocab_size`` on a small corpus: the limit is soft, and the real size is reported)."""
    import sentencepiece as spm
    from transformers import AlbertTokenizer

    for name in inputs:
        if not Path(name).is_file():
            raise UserError("input file not found; check --input", name)
    counter = [0, 0]
    model = io.BytesIO()
    try:
        spm.set_random_generator_seed(seed)
        spm.SentencePieceTrainer.train(
            sentence_iterator=_counted(iter_sentences(inputs, fmt, token_column), counter), model_writer=model,
            vocab_size=vocab_size, model_type="unigram", pad_id=0, unk_id=1, bos_id=-1, eos_id=-1,
            control_symbols=SPECIALS, hard_vocab_limit=False, character_coverage=character_coverage,
            input_sentence_size=MAX_SENTENCES, shuffle_input_sentence=True, num_threads=1, minloglevel=2)
    except RuntimeError as exc:  # SentencePiece's own checks (e.g. a vocabulary smaller than the alphabet)
        if counter[0] == 0:
            raise UserError("no sentences in the input files; give raw text (one sentence per line) or CoNLL files",
                            inputs[0]) from None
        text = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
        reason = text.rsplit("] ", 1)[-1]  # drop SentencePiece's source location and failed expression
        raise UserError(f"SentencePiece could not train a vocabulary of {vocab_size}: {reason}", "--vocab-size") from None
    with atomic_directory(output) as tmp:
        (tmp / "spiece.model").write_bytes(model.getvalue())
        tokenizer = AlbertTokenizer.from_pretrained(str(tmp / "spiece.model"), do_lower_case=False, keep_accents=True)
        tokenizer.save_pretrained(str(tmp))
        size = len(tokenizer)
    if size < vocab_size:  # hard_vocab_limit=False: SentencePiece keeps only the pieces the corpus supports
        warn(f"vocabulary of {size:,} pieces, fewer than --vocab-size {vocab_size:,}: {counter[0]:,} sentences "
             f"({counter[1]:,} characters) hold no more pieces worth keeping (SentencePiece's unigram model prunes "
             "the rest); give more text for a larger vocabulary, or ask for fewer pieces", output)
    log.info(f"vocabulary of {size} pieces from {counter[0]} sentences in {output}")
    return size
