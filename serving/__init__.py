"""Serving: the run's models behind vLLM (with the in-server trie beam search) and the chat model
behind llama.cpp or vLLM. The code that reaches them and ranks with them lives in `inference/`."""
