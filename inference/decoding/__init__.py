"""Semantic-ID decoding, in one place: the trie of valid IDs, the prompt built from a history, and
the in-process beam search. The vLLM backend (`serving/`) walks the same trie inside the server.
"""
