"""phils: inline code completions from Phi-2, served over LSP from your own machine."""

__version__ = "0.1.0"
