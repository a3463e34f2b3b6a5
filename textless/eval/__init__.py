"""Evaluation: likelihood suites, tokenizer metrics, generative metrics."""
