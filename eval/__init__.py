"""Offline evaluation: one protocol, one metric implementation, every model and baseline."""
