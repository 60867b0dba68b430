"""Weight files, quantized formats and their kernels, and weight residency. Imports no model."""
