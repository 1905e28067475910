#!/usr/bin/env python
"""Train a tagger: python train.py --config configs/quickstart.yaml [--set key=value]... [--output-dir DIR]"""
import sys

from ner_toolkit.cli import train_main

if __name__ == "__main__":
    sys.exit(train_main())
