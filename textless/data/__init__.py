"""Datasets: audio manifests and sharding, alignments, the bundled corpus, and the unit dataset format."""

from __future__ import annotations

from pathlib import Path

from textless.data.corpus import BUNDLED_PREFIX, load_bundled_corpus
from textless.data.manifest import AudioItem, Manifest, load_manifest, resolve_shard, scan_directory, shard_from_env


def load_dataset(spec: str | Path) -> Manifest:
    """An audio dataset from a path (directory, TSV/JSONL or fairseq manifest) or ``bundled:<split>``."""
    if isinstance(spec, str) and spec.startswith(BUNDLED_PREFIX):
        return load_bundled_corpus(spec[len(BUNDLED_PREFIX):])
    return load_manifest(spec)


__all__ = ["AudioItem", "Manifest", "load_dataset", "load_manifest", "resolve_shard", "scan_directory",
           "shard_from_env"]
