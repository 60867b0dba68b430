"""Text in and out of models: tokenizers (BERT WordPiece, GGUF vocabularies, Hugging Face tokenizer.json through the
`tokenizers` library) and chat templates."""
