"""Serving: the run's models behind vLLM, the in-server trie beam search, and the client that reaches them."""
