#!/usr/bin/env python
"""Tag CoNLL files: python predict.py --model DIR INPUT... [--output PATH] [--evaluate]"""
from ner_toolkit.cli import exit_process, predict_main

if __name__ == "__main__":
    exit_process(predict_main())  # without the interpreter's second-long teardown of torch
