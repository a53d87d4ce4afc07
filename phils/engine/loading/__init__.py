"""Loading: where a model's files are, conversion, adapters, old-layout checkpoints, choosing the runtime once."""
