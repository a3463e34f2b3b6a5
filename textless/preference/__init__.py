"""Align-SLM: preference pairs from automatic feedback (judges, selection), the DPO objective, the curriculum."""
