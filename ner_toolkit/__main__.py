"""``python -m ner_toolkit ...`` is the ``ner`` command (``ner train|predict|evaluate|...``)."""
from ner_toolkit.cli import console

if __name__ == "__main__":
    console()
