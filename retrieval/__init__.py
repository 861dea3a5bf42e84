"""Catalog loading, multimodal encoding, the Chroma store and semantic IDs."""
