"""The Flair peer of bench_peers.py: a ``SequenceTagger`` (BiLSTM-CRF) over MiniLM + GloVe. Runs in its own
virtualenv (torch, flair, gensim), started by bench_peers.py:

    python flair_tagger.py vectors --glove glove.6B.50d.txt.gz --output glove.6B.50d.kv
    python flair_tagger.py train --encoder DIR --vectors glove.6B.50d.kv --data DIR --out DIR --epochs 3
    python flair_tagger.py predict --model DIR/model --input test.txt --output test.pred.conll --stats stats.json

Model: ``StackedEmbeddings([TransformerWordEmbeddings(encoder, layers="-1", subtoken_pooling="first",
fine_tune=True), WordEmbeddings(vectors)])`` -> ``SequenceTagger(hidden_size=256, use_rnn=True, rnn_layers=1,
use_crf=True)`` with Flair's other defaults (tags converted to BIOES, reprojection of the embeddings, word
dropout 0.05, locked dropout 0.5; the GloVe table frozen, as WordEmbeddings keeps it; Flair looks a word up as
written, then lower-cased, then with digits normalised).
GloVe reaches WordEmbeddings as a gensim KeyedVectors file (``vectors``: the text file read once by gensim and
saved; Flair loads only .bin/.txt word2vec files or gensim's own format, not a gzipped GloVe file).

Training: ``ModelTrainer.fine_tune`` (Flair's recipe for a fine-tuned transformer): ``torch.optim.AdamW`` with one
learning rate (5e-5) for every parameter, the transformer's and the new BiLSTM/CRF's alike (``--decoder-lr``
gives every parameter outside the embeddings another one, fine_tune's ``decoder_learning_rate``), and AdamW's
default weight decay 0.01; Flair's ``LinearSchedulerPlugin`` (linear warmup over 10 % of the steps, then linear decay to
0); batches of 32 sentences shuffled every epoch; gradient norm clipped to 5.0 (Flair's default); dev scored by
Flair after every epoch, as it does by default; ``use_final_model_for_eval=True``, so the model kept is the last
epoch's (final-model.pt), and no test set is given to the trainer (``sample_missing_splits=False``: Flair would
otherwise carve a test set out of the training data). ``flair.set_seed(--seed)``.

``train`` writes OUT/model/final-model.pt, OUT/dev.pred.conll (the final model on the dev set) and
OUT/train_stats.json; ``train_seconds`` is the sum over epochs of the time from Flair's ``before_training_epoch``
event to its ``after_training_epoch`` event (the batch loop; the per-epoch dev scoring comes after it).
``predict`` writes the ``token gold pred`` file and a stats JSON with ``load_seconds`` (SequenceTagger.load) and
``tag_seconds``: from token lists in memory (Flair ``Sentence`` objects built inside the timer) to IOB2 tags.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peer_io import (  # noqa: E402
    forbid_network, read_conll, set_threads, write_json, write_predict_stats, write_predictions)


def versions() -> dict[str, str]:
    import flair
    import torch
    import transformers

    return {"torch": torch.__version__, "flair": flair.__version__, "transformers": transformers.__version__}


def convert_vectors(args: argparse.Namespace) -> None:
    """GloVe text (gzipped or not, no header line) -> one gensim KeyedVectors file."""
    from gensim.models import KeyedVectors

    vectors = KeyedVectors.load_word2vec_format(str(args.glove), binary=False, no_header=True)
    tmp = args.output.with_name(args.output.name + ".tmp")
    vectors.save(str(tmp), separately=[])  # the matrix inside the one file, so that it can be moved into place
    os.replace(tmp, args.output)
    print(f"{len(vectors.index_to_key)} vectors of {vectors.vector_size} dimensions -> {args.output}")


def tag(tagger: Any, sentences: Sequence[Sequence[str]], batch_size: int) -> list[list[str]]:
    """IOB2 tags of the spans the tagger predicts (Flair sorts the sentences by length into batches)."""
    from flair.data import Sentence

    flair_sentences = [Sentence(list(tokens)) for tokens in sentences]
    tagger.predict(flair_sentences, mini_batch_size=batch_size, label_name="predicted")
    out = []
    for sentence in flair_sentences:
        tags = ["O"] * len(sentence)
        for span in sentence.get_spans("predicted"):
            label = span.get_label("predicted").value
            for k, token in enumerate(span.tokens):
                tags[token.idx - 1] = ("B-" if k == 0 else "I-") + label
        out.append(tags)
    return out


def train(args: argparse.Namespace) -> None:
    import flair
    import torch
    from flair.datasets import ColumnCorpus
    from flair.embeddings import StackedEmbeddings, TransformerWordEmbeddings, WordEmbeddings
    from flair.models import SequenceTagger
    from flair.trainers import ModelTrainer
    from flair.trainers.plugins.base import TrainerPlugin

    class EpochTimer(TrainerPlugin):
        """Seconds of each epoch's batch loop, from Flair's own epoch events."""

        def __init__(self) -> None:
            super().__init__()
            self.seconds: list[float] = []
            self.started = 0.0

        @TrainerPlugin.hook
        def before_training_epoch(self, **kwargs: Any) -> None:
            self.started = time.perf_counter()

        @TrainerPlugin.hook
        def after_training_epoch(self, **kwargs: Any) -> None:
            self.seconds.append(time.perf_counter() - self.started)

    set_threads(args.threads)
    flair.device = torch.device("cpu")
    flair.set_seed(args.seed)
    corpus = ColumnCorpus(args.data, {0: "text", 1: "ner"}, train_file="train.txt", dev_file="dev.txt",
                          test_file=None, autofind_splits=False, sample_missing_splits=False, in_memory=True)
    labels = corpus.make_label_dictionary(label_type="ner", add_unk=False)
    embeddings = StackedEmbeddings([
        TransformerWordEmbeddings(str(args.encoder), layers="-1", subtoken_pooling="first", fine_tune=True),
        WordEmbeddings(str(args.vectors)),
    ])
    tagger = SequenceTagger(hidden_size=256, embeddings=embeddings, tag_dictionary=labels, tag_type="ner",
                            use_rnn=True, rnn_layers=1, use_crf=True)
    timer = EpochTimer()
    model_dir = args.out / "model"
    ModelTrainer(tagger, corpus).fine_tune(
        model_dir, learning_rate=args.lr, mini_batch_size=args.batch_size, max_epochs=args.epochs,
        warmup_fraction=args.warmup, decoder_learning_rate=args.decoder_lr, optimizer=torch.optim.AdamW,
        shuffle=True, embeddings_storage_mode="none",
        use_final_model_for_eval=True, save_final_model=True, plugins=[timer])
    dev_set = read_conll(args.data / "dev.txt")
    write_predictions(args.out / "dev.pred.conll", dev_set, tag(tagger, [tokens for tokens, _ in dev_set], 64))
    write_json(args.out / "train_stats.json", {
        "train_seconds": sum(timer.seconds), "epoch_seconds": timer.seconds, "epochs": len(timer.seconds),
        "sentences": len(corpus.train), "labels": labels.get_items(), "threads": torch.get_num_threads(),
        "versions": versions(),
        "how": "perf_counter from Flair's before_training_epoch to after_training_epoch event, summed",
        "recipe": {"embeddings": "TransformerWordEmbeddings(layers=-1, first subtoken, fine_tune) + WordEmbeddings",
                   "tagger": "SequenceTagger(hidden 256, 1 BiLSTM layer, CRF, BIOES)",
                   "trainer": "ModelTrainer.fine_tune", "optimizer": "torch.optim.AdamW (weight decay 0.01)",
                   "lr": args.lr, "decoder_lr": args.decoder_lr,
                   "schedule": f"LinearSchedulerPlugin, warmup fraction {args.warmup}",
                   "batch_size": args.batch_size, "epochs": args.epochs, "seed": args.seed, "max_grad_norm": 5.0,
                   "model_kept": "last epoch (final-model.pt)", "precision": "fp32"}})


def predict(args: argparse.Namespace) -> None:
    import flair
    import torch
    from flair.models import SequenceTagger

    set_threads(args.threads)
    flair.device = torch.device("cpu")
    sentences = read_conll(args.input)
    started = time.perf_counter()
    tagger = SequenceTagger.load(str(args.model / "final-model.pt"))
    tagger.eval()
    loaded = time.perf_counter()
    tags = tag(tagger, [tokens for tokens, _ in sentences], args.batch_size)
    tagged = time.perf_counter()
    write_predictions(args.output, sentences, tags)
    write_predict_stats(args.stats, started, loaded, tagged, len(sentences),
                        f"perf_counter around Sentence objects + SequenceTagger.predict(mini_batch_size="
                        f"{args.batch_size}) + spans to IOB2 tags, fp32; SequenceTagger.load excluded",
                        versions=versions())


def main() -> None:
    forbid_network()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    v = sub.add_parser("vectors")
    v.add_argument("--glove", type=Path, required=True)
    v.add_argument("--output", type=Path, required=True)
    t = sub.add_parser("train")
    t.add_argument("--encoder", type=Path, required=True)
    t.add_argument("--vectors", type=Path, required=True, help="gensim KeyedVectors file (see: vectors)")
    t.add_argument("--data", type=Path, required=True, help="folder with train.txt and dev.txt (token tag)")
    t.add_argument("--out", type=Path, required=True)
    t.add_argument("--epochs", type=int, required=True)
    t.add_argument("--seed", type=int, default=42)
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--lr", type=float, default=5e-5)
    t.add_argument("--warmup", type=float, default=0.1, help="fraction of the steps")
    t.add_argument("--decoder-lr", type=float, default=None,
                   help="fine_tune's decoder_learning_rate for every parameter outside the embeddings "
                        "(default: none, --lr for all)")
    p = sub.add_parser("predict")
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--input", type=Path, required=True)
    p.add_argument("--output", type=Path, required=True)
    p.add_argument("--stats", type=Path, required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args()
    {"vectors": convert_vectors, "train": train, "predict": predict}[args.command](args)


if __name__ == "__main__":
    main()
