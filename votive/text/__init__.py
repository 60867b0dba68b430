"""Text in and out of models: tokenizers (BERT WordPiece, GGUF vocabularies) and chat templates."""
