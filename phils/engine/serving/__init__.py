"""Serving: the HTTP server, the service (queue, KV budget), the worker thread that owns the model, metrics."""
