"""Adapters that put a trained model inside other libraries' pipelines (``spacy``: a spaCy component).

Each module imports its library at the top, behind ``extras.require``; nothing else in the toolkit imports
them, so the library stays an optional extra."""
