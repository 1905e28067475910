#!/usr/bin/env python
"""Train a tagger: python train.py --config configs/quickstart.yaml [--set key=value]... [--output-dir DIR]
(the same command as ``ner train`` and ``ner-train``)."""
from ner_toolkit.cli import command_console

if __name__ == "__main__":
    command_console("train", "train.py")()  # ends without the interpreter's second-long teardown of torch
