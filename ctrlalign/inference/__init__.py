"""Inference: batched controlled generation, the alignment dial (one path from any request
to a generation row) and the OpenAI-compatible server. It never imports ``training``."""
