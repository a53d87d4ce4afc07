"""The per-window front: the LSP server, cursor context, prompt, stop rule, filters, typed-through.

It imports no torch unless it runs the model in its own process
(``engine.backend = "local"``).
"""
