"""Audio batches for encoders: load, resample, group by total duration; per-file failures are reported, not fatal."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch

from textless.audio import DEFAULT_MAX_SECONDS, audio_info, load_audio
from textless.data.manifest import AudioItem
from textless.errors import TextlessError


@dataclass
class Failure:
    id: str
    path: str
    error: str

    def to_dict(self) -> dict:
        return {"id": self.id, "path": self.path, "error": self.error}


def with_known_durations(items: Iterable[AudioItem], on_error: Callable[[Failure], None]) -> list[AudioItem]:
    """Items with a duration (read from the header when unknown); unreadable files go to `on_error`."""
    from dataclasses import replace

    out = []
    for item in items:
        if item.duration is not None:
            out.append(item)
            continue
        try:
            out.append(replace(item, duration=audio_info(item.path).duration))
        except TextlessError as e:
            on_error(Failure(item.id, str(item.path), str(e)))
    return out


def iter_audio_batches(items: Iterable[AudioItem], sample_rate: int, batch_seconds: float,
                       on_error: Callable[[Failure], None], max_seconds: float | None = DEFAULT_MAX_SECONDS,
                       sort_by_duration: bool = True, length_problem: Callable[[int], str | None] | None = None
                       ) -> Iterator[tuple[list[AudioItem], list[torch.Tensor]]]:
    """Yield ``(items, waveforms)`` batches: mono float32 [T] tensors at `sample_rate`, at most `batch_seconds` of audio
    per batch (a longer single file is its own batch). Sorting by duration keeps padding small. Unreadable files,
    and files for which ``length_problem(samples)`` returns a reason (an encoder's ``length_problem``: too short for
    one frame), go to `on_error` and are left out.
    """
    items = with_known_durations(items, on_error)
    if sort_by_duration:
        items = sorted(items, key=lambda item: (item.duration, item.id))
    batch_items: list[AudioItem] = []
    batch_wavs: list[torch.Tensor] = []
    total = 0.0
    for item in items:
        try:
            wav, _ = load_audio(item.path, sample_rate, max_seconds=max_seconds)
        except TextlessError as e:
            on_error(Failure(item.id, str(item.path), str(e)))
            continue
        problem = length_problem(len(wav)) if length_problem is not None else None
        if problem:
            on_error(Failure(item.id, str(item.path), problem))
            continue
        seconds = len(wav) / sample_rate
        if batch_items and total + seconds > batch_seconds:
            yield batch_items, batch_wavs
            batch_items, batch_wavs, total = [], [], 0.0
        batch_items.append(item)
        batch_wavs.append(wav)
        total += seconds
    if batch_items:
        yield batch_items, batch_wavs
