"""Lambda handler functions, one per model kind, and the adapters between Lambda events and HTTP requests."""
