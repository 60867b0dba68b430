"""Weight files: safetensors and GGUF read through read-only memory maps (and GGUF written), and weight residency
over one or more checkpoint files. Imports no model, kernel or backend."""
