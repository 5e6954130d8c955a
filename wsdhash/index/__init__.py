"""Search indexes over learned codes: FAISS binary indexes for hash codes, an AQD
index for WSDHQ quantization codes, and shards of either (`python -m wsdhash.search`)."""
