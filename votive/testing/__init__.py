"""Test and benchmark fixtures (never shipped): model files with random weights written as real GGUF files and
BERT folders."""
