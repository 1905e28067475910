"""The ``ner-serve`` HTTP service: ``app`` (the Starlette API), ``batching`` (dynamic batching over the models),
``worker`` (the model processes), ``pipe`` (frames between them), ``http``/``layers``/``linger`` (connection bounds).

Nothing is imported here: the CLI and the model processes import only the modules they use.
"""
