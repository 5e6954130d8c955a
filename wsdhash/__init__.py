"""wsdhash: deep hashing and hyperspherical quantization for image retrieval."""

__version__ = "0.1.0"
