"""genrec: an LLM-centric multimodal generative recommender.

The top-level package holds what every stage shares: the run configuration, the run directory
layout, atomic file writes and the one-line error type. The stages live in `retrieval`, `finetune`,
`agent` and `eval`.
"""

__version__ = "0.1.0"
