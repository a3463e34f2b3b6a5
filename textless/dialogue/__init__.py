"""Spoken dialogue: two-channel data, turn-taking statistics, interaction metrics, dialogue models."""
