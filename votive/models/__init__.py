"""One file per architecture family; `load_model` picks the family from what a model folder or file holds."""
