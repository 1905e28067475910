#!/usr/bin/env python
"""Tag CoNLL files: python predict.py --model DIR INPUT... [--output PATH] [--evaluate]"""
import sys

from ner_toolkit.cli import predict_main

if __name__ == "__main__":
    sys.exit(predict_main())
