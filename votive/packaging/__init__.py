"""Builders for deployable artifacts: Lambda layers, function zips, container and GPU images, Modal apps."""
