"""Speed and memory harnesses; run them as modules from the repository root: python -m benchmarks.<name>."""
