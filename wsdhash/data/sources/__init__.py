"""Preparers: one module per real dataset, reading its official layout or TFDS."""
