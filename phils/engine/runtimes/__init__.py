"""Runtimes: what runs a forward pass and holds a KV cache: torch (fp32, oneDNN layout, int8), ONNX Runtime GenAI (4-bit), phils' C kernels."""
