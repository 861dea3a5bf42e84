"""Inference: a trained run at work. Its models (the base language models, the dense networks), the
prompts and semantic-ID tokens they read, trie-constrained decoding in process or through a vLLM
server, the served ranking that fuses the two, and grounded explanations. Training (`finetune/`)
validates through this code; serving, the agent and evaluation call it; it calls nothing above it.
"""
