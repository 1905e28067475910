#!/usr/bin/env python
"""Tag CoNLL files: python predict.py --model DIR INPUT... [--output PATH] [--evaluate]
(the same command as ``ner predict`` and ``ner-predict``)."""
from ner_toolkit.cli import command_console

if __name__ == "__main__":
    command_console("predict", "predict.py")()  # ends without the interpreter's second-long teardown of torch
