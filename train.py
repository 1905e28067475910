#!/usr/bin/env python
"""Train a tagger: python train.py --config configs/quickstart.yaml [--set key=value]... [--output-dir DIR]"""
from ner_toolkit.cli import exit_process, train_main

if __name__ == "__main__":
    exit_process(train_main())  # without the interpreter's second-long teardown of torch
