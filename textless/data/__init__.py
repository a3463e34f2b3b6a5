"""Datasets: audio manifests and sharding, alignments, the bundled corpus, and the unit dataset format."""

from textless.data.manifest import AudioItem, Manifest, load_manifest, scan_directory, shard_from_env

__all__ = ["AudioItem", "Manifest", "load_manifest", "scan_directory", "shard_from_env"]
