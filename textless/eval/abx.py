"""ABX phone discriminability, within and across speakers, as the libri-light / ZeroSpeech 2021 "phonetic" task.

What is measured
----------------
An ``.item`` file lists tokens (triphones, by default): ``#file onset offset #phone prev-phone next-phone speaker``
after one header line, times in seconds. Tokens with the same context ``prev+next`` and speaker, grouped by central
phone, give the A and B groups. For each context, speaker and ordered pair of phones (A != B):

* within speaker: X runs over the A group itself (each token of A against the rest of A, diagonal excluded), so
  ``theta = [#(d(x,a) < d(x,b)) + 0.5 #(d(x,a) == d(x,b))] / (Na (Na - 1) Nb)``;
* across speaker: X is the A phone, same context, from another speaker (up to ``max_x_across`` speakers, sampled),
  ``theta = [...] / (Na Nx Nb)``.

The error ``1 - theta`` is averaged over contexts (and X speakers, in one flat mean), then over the speakers that
have the phone pair, then over phone pairs. Each group holds at most ``max_size_group`` tokens, sampled at random.
``d`` is dynamic time warping over frame distances, divided by the length of the warping path; the frames of a token
are ``ceil(onset / shift - 0.5) .. floor(offset / shift - 0.5)`` (end excluded), frame i standing at time
``(i + 0.5) * shift``; features are L2-normalised (a zero frame is put at the maximal distance from every other one)
and the frame distance is the angular distance ``acos(a . b) / pi`` in [0, 1] (``distance="cosine"``, the
benchmark's) or the Euclidean one on the normalised frames.

Written here, not taken from a library
--------------------------------------
The maintained package of the anchor code is ``zerospeech-libriabx`` (PyPI; ``libri-light-abx`` is not published). It
was checked and is not wrapped because: it reads features only from a directory of files (its wrapper mounts
symlinks through ``virtual-dataset``); it samples with the global, unseeded `random` module; its DTW is a Cython
extension built against numpy 1.x, which does not import with our numpy 2 ("numpy.dtype size changed"), in wheels for
a few Python versions only; it prints progress bars on stdout; it uses the deprecated
``torch.sparse.FloatTensor`` constructors; and it computes each group's frame distances as one padded
``[Na, Nb, La, Lb, D]`` tensor (hundreds of MB for 10-token groups of 768-d features). This module re-implements
``libri_light/eval_ABX.py`` + ``ABX_src`` (v1.0.5) on in-memory arrays:

* same item parsing (ids of contexts, phones and speakers in order of first appearance), same frame slicing, same
  normalisation (the extra ``1e-12`` coordinate included), same group order (stable sort by context, speaker, phone),
  same iteration and same calls to the random generator: a ``random.Random(seed)`` replaces the global ``random``, so
  with ``random.seed(seed)`` before the anchor's ``ABX(...)`` and the files in the same order both sample the same
  tokens (checked against the anchor, its DTW rebuilt for numpy 2, on MFCC and one-hot unit features of
  bundled:valid_unseen and on a synthetic 8-speaker set with group and X-speaker sampling: scores equal within 3e-8);
* the DTW is the anchor's (float32 costs, the same 3-move recursion and back-tracking tie rules, cost divided by the
  back-tracked path length, the diagonal of within-speaker X-vs-A excluded), compiled with numba;
* frame distances come from one float32 matrix product per pair of groups, so a dot product may differ from the
  anchor's in the last bit (its sum runs in another order), and the final means run in float64 (the anchor's in
  float32): scores agree to about 1e-6.

Discrete units
--------------
`unit_features` turns frame-level unit labels into features: one-hot codes (a common way to score discrete units
with this continuous benchmark; not part of the anchor code) or each frame's k-means centroid. With one-hot codes
the angular distance between two frames is 0 for the same unit and 0.5 otherwise, so a token distance is half the
fraction of mismatched cells on the best warping path (and ties, counted 0.5, are frequent); with centroids it is
the angle between centroids, i.e. what quantisation keeps of the continuous features' geometry.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from numba import njit

from textless.data.alignments import Alignment
from textless.errors import ConfigError, FormatError, TextlessError

ITEM_HEADER = "#file onset offset #phone prev-phone next-phone speaker"
MODES = ("within", "across")
DISTANCES = ("cosine", "euclidean")
EXTENSIONS = ("triphone", "single_phone", "half_triphone")


# ---------------------------------------------------------------------------------------------------- item files
@dataclass(frozen=True)
class ABXItem:
    """One token of an item file: ``file`` (utterance id), ``onset``/``offset`` (seconds), the central ``phone``, its
    neighbours ``prev``/``next`` and the ``speaker``."""

    file: str
    onset: float
    offset: float
    phone: str
    prev: str
    next: str
    speaker: str

    @property
    def context(self) -> str:
        return f"{self.prev}+{self.next}"

    def to_line(self) -> str:
        return (f"{self.file} {self.onset:.4f} {self.offset:.4f} {self.phone} {self.prev} {self.next} "
                f"{self.speaker}")


def read_item_file(path: str | Path) -> list[ABXItem]:
    """Parse an ``.item`` file: the first line is a header (skipped), then 7 whitespace-separated fields per line."""
    path = Path(path)
    if not path.exists():
        raise TextlessError(f"item file '{path}' does not exist")
    items = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if n == 1 or not line.strip():
                continue
            fields = line.split()
            if len(fields) != 7:
                raise FormatError(path, f"expected 7 fields (file onset offset phone prev next speaker), got "
                                        f"{len(fields)}", n)
            try:
                onset, offset = float(fields[1]), float(fields[2])
            except ValueError:
                raise FormatError(path, f"onset/offset must be numbers (seconds), got {fields[1]!r} {fields[2]!r}",
                                  n) from None
            if not 0 <= onset <= offset:
                raise FormatError(path, f"onset {onset} and offset {offset} are not 0 <= onset <= offset", n)
            items.append(ABXItem(fields[0], onset, offset, fields[3], fields[4], fields[5], fields[6]))
    if not items:
        raise FormatError(path, "no items (a header line, then one token per line)")
    return items


def write_item_file(items: Sequence[ABXItem], path: str | Path) -> Path:
    """Write `items` with the standard header; times with 4 decimals (exact for alignments in milliseconds)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([ITEM_HEADER, *(item.to_line() for item in items)]) + "\n", encoding="utf-8")
    return path


def make_items(alignments: Mapping[str, Alignment], speakers: Mapping[str, str], *,
               extension: str = "triphone", exclude: Sequence[str] = ("SIL",)) -> list[ABXItem]:
    """ABX tokens of phone alignments, as abkhazia's ``alignment2item`` makes them (ZeroSpeech's item files).

    Every phone with a phone on each side gives a token ``phone`` in context ``prev+next``. Its time span is, per
    `extension`: ``"triphone"`` (default, ZeroSpeech 2021's dev/test items) from the start of ``prev`` to the end of
    ``next``; ``"half_triphone"`` from the middle of ``prev`` to the middle of ``next``; ``"single_phone"`` the phone
    alone (and then the first and last phones get a ``SIL`` context, as in abkhazia). Tokens with a phone of `exclude`
    as the central phone or in the context are left out (silence by default). `speakers` maps utterance id ->
    speaker; utterances without a speaker raise. Files are taken in `alignments` order.
    """
    if extension not in EXTENSIONS:
        raise ConfigError(f"unknown item extension '{extension}' (choose from {', '.join(EXTENSIONS)})")
    excluded = set(exclude)
    items: list[ABXItem] = []
    for uid, alignment in alignments.items():
        if uid not in speakers or speakers[uid] is None:
            raise TextlessError(f"utterance '{uid}' has no speaker: ABX items need one per utterance")
        speaker = str(speakers[uid])
        phones = alignment.phones
        spans: list[tuple[float, float, str, str, str]] = []
        if extension == "single_phone" and phones:
            spans.append((phones[0][0], phones[0][1], phones[0][2], "SIL", phones[1][2] if len(phones) > 1 else "SIL"))
        for (p_start, p_end, prev), (start, end, phone), (n_start, n_end, nxt) in zip(phones, phones[1:], phones[2:]):
            if extension == "triphone":
                start, end = p_start, n_end
            elif extension == "half_triphone":
                start, end = (p_start + p_end) / 2, (n_start + n_end) / 2
            spans.append((start, end, phone, prev, nxt))
        if extension == "single_phone" and len(phones) > 1:
            spans.append((phones[-1][0], phones[-1][1], phones[-1][2], phones[-2][2], "SIL"))
        for start, end, phone, prev, nxt in spans:
            if not excluded.intersection((phone, prev, nxt)):
                items.append(ABXItem(uid, start, end, phone, prev, nxt, speaker))
    return items


def make_item_file(alignments: Mapping[str, Alignment], speakers: Mapping[str, str], path: str | Path, *,
                   extension: str = "triphone", exclude: Sequence[str] = ("SIL",)) -> Path:
    """`make_items` written to `path` (see there)."""
    items = make_items(alignments, speakers, extension=extension, exclude=exclude)
    if not items:
        raise TextlessError("the alignments give no ABX items (no phone with two non-excluded neighbours)")
    return write_item_file(items, path)


# --------------------------------------------------------------------------------------------------- features
def unit_features(labels: Mapping[str, np.ndarray], num_units: int,
                  centroids: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Frame-level unit labels (int ``[T]`` per file, before dedup) -> features for `abx_error_rates`.

    Without `centroids`: one-hot float32 ``[T, num_units]``; with `centroids` ``[num_units, D]``: each frame's
    centroid, float32 ``[T, D]``. See the module docstring for what each measures.
    """
    table = np.eye(num_units, dtype=np.float32) if centroids is None else np.asarray(centroids, dtype=np.float32)
    if table.shape[0] != num_units:
        raise ConfigError(f"{table.shape[0]} centroids for {num_units} units")
    out = {}
    for uid, lab in labels.items():
        lab = np.asarray(lab)
        if lab.ndim != 1 or (lab.size and (lab.min() < 0 or lab.max() >= num_units)):
            raise TextlessError(f"units of '{uid}' must be a 1-D array of ids in [0, {num_units})")
        out[uid] = table[lab.astype(np.int64)]
    return out


def normalize_with_singularity(x: np.ndarray) -> np.ndarray:
    """``[T, D]`` -> float32 ``[T, D + 1]``: rows L2-normalised plus a ``1e-12`` coordinate; a zero row becomes
    ``1/sqrt(D)`` everywhere with ``-2e12`` as last coordinate, i.e. at angular distance 1 from every non-zero row
    (the anchor's ``normalize_with_singularity``; computed in the input's float precision, then cast to float32)."""
    x = np.array(x, dtype=np.float64 if x.dtype == np.float64 else np.float32)
    norm = (x ** 2).sum(axis=1, keepdims=True)
    zero = norm[:, 0] == 0
    with np.errstate(invalid="ignore", divide="ignore"):
        x /= np.sqrt(norm)
    x[zero] = 1 / math.sqrt(x.shape[1])
    border = np.full((len(x), 1), 1e-12, dtype=x.dtype)
    border[zero] = -2 * 1e12
    return np.concatenate([x, border], axis=1).astype(np.float32)


# -------------------------------------------------------------------------------------------------------- DTW
@njit(cache=True, nogil=True)
def _dtw(dist: np.ndarray) -> float:
    """DTW cost of a frame-distance matrix float32 ``[N, M]`` divided by the back-tracked path length (the anchor's
    ``_dtw(..., normalized=True)``: float32 accumulation, ties prefer diagonal, then left, then up)."""
    n, m = dist.shape
    cost = np.empty((n, m), dtype=np.float32)
    cost[0, 0] = dist[0, 0]
    for i in range(1, n):
        cost[i, 0] = dist[i, 0] + cost[i - 1, 0]
    for j in range(1, m):
        cost[0, j] = dist[0, j] + cost[0, j - 1]
    for i in range(1, n):
        for j in range(1, m):
            cost[i, j] = dist[i, j] + min(cost[i - 1, j], cost[i - 1, j - 1], cost[i, j - 1])
    path_len = 1
    i = n - 1
    j = m - 1
    while i > 0 and j > 0:
        c_up = cost[i - 1, j]
        c_left = cost[i, j - 1]
        c_diag = cost[i - 1, j - 1]
        if c_diag <= c_left and c_diag <= c_up:
            i -= 1
            j -= 1
        elif c_left <= c_up:
            j -= 1
        else:
            i -= 1
        path_len += 1
    if i == 0:
        path_len += j
    if j == 0:
        path_len += i
    return cost[n - 1, m - 1] / path_len


@njit(cache=True, nogil=True)
def _group_dtw(frame_dist: np.ndarray, off_x: np.ndarray, len_x: np.ndarray, off_y: np.ndarray, len_y: np.ndarray,
               symmetric: bool) -> np.ndarray:
    """Token distances float32 ``[Nx, Ny]`` from the frame distances of two groups ``[sum(len_x), sum(len_y)]``.

    ``symmetric`` (X = Y, within speaker): only ``i < j`` is computed (``dtw(x_i, y_j)``) and mirrored; the diagonal
    stays 0 (the caller excludes it)."""
    nx, ny = len(len_x), len(len_y)
    out = np.zeros((nx, ny), dtype=np.float32)
    for i in range(nx):
        for j in range(i if symmetric else 0, ny):
            if symmetric and i == j:
                continue
            d = _dtw(frame_dist[off_x[i]:off_x[i] + len_x[i], off_y[j]:off_y[j] + len_y[j]])
            out[i, j] = d
            if symmetric:
                out[j, i] = out[i, j]
    return out


def dtw_distance(a: np.ndarray, b: np.ndarray, distance: str = "cosine") -> float:
    """Path-length-normalised DTW distance between two token feature matrices ``[La, D]`` and ``[Lb, D]`` (normalised
    here as in `abx_error_rates`)."""
    a, b = normalize_with_singularity(np.asarray(a)), normalize_with_singularity(np.asarray(b))
    return float(_dtw(frame_distances(a, b, distance)))


def frame_distances(x: np.ndarray, y: np.ndarray, distance: str = "cosine") -> np.ndarray:
    """float32 ``[Lx, Ly]`` distances between normalised frames: ``acos(clamp(x.y, -1, 1)) / pi`` or ``||x - y||``."""
    if distance == "cosine":
        dot = np.clip(x @ y.T, -1, 1)
        return (np.arccos(dot) / np.float32(math.pi)).astype(np.float32)
    sq = (x ** 2).sum(1)[:, None] + (y ** 2).sum(1)[None, :] - 2 * (x @ y.T)
    return np.sqrt(np.maximum(sq, 0)).astype(np.float32)


# ----------------------------------------------------------------------------------------------------- scoring
@dataclass
class ABXResult:
    """ABX error rates as fractions in [0, 1] (None: no triplet for that mode) and how much data went in."""

    within: float | None
    across: float | None
    tokens: int                # item-file tokens with at least one frame
    items_dropped: int         # tokens of the item file left out: file without features, or no frame in the span
    within_triplet_groups: int  # (context, speaker, A, B) cells scored
    across_triplet_groups: int  # (context, speaker A, A, B, speaker X) cells scored
    phone_pairs_within: int
    phone_pairs_across: int

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Token:
    start: int   # row in the concatenated (normalised) frames of all files
    size: int
    context: int
    phone: int
    speaker: int


class _Tokens:
    """Sliced, normalised token frames and their (context, speaker, phone) groups, in the anchor's order."""

    def __init__(self, features: Mapping[str, np.ndarray], items: Sequence[ABXItem], frame_shift: float):
        contexts: dict[str, int] = {}
        phones: dict[str, int] = {}
        speakers: dict[str, int] = {}
        by_file: dict[str, list[tuple[float, float, int, int, int]]] = {}
        for item in items:  # ids in order of first appearance, as load_item_file
            c = contexts.setdefault(item.context, len(contexts))
            p = phones.setdefault(item.phone, len(phones))
            s = speakers.setdefault(item.speaker, len(speakers))
            by_file.setdefault(item.file, []).append((item.onset, item.offset, c, p, s))
        step = 1 / frame_shift
        self.tokens: list[_Token] = []
        chunks: list[np.ndarray] = []
        total = 0
        for uid, feats in features.items():
            if uid not in by_file:
                continue
            feats = np.asarray(feats)
            if feats.ndim != 2 or feats.shape[0] == 0 or not np.issubdtype(feats.dtype, np.floating):
                raise TextlessError(f"features of '{uid}' must be a non-empty float matrix [frames, D], got "
                                    f"{feats.dtype} {tuple(feats.shape)}")
            normed = normalize_with_singularity(feats)
            if chunks and normed.shape[1] != chunks[0].shape[1]:
                raise TextlessError(f"features of '{uid}' have {feats.shape[1]} dimensions, others "
                                    f"{chunks[0].shape[1] - 1}")
            n = len(normed)
            for onset, offset, c, p, s in by_file[uid]:
                start = max(0, math.ceil(step * onset - 0.5))
                end = min(n, math.floor(step * offset - 0.5))
                if start >= n or end <= start:
                    continue
                self.tokens.append(_Token(total + start, end - start, c, p, s))
            chunks.append(normed)  # whole files once (triphone tokens overlap), tokens index into them
            total += n
        if not self.tokens:
            known = sum(uid in by_file for uid in features)
            example = f" (the item file names e.g. '{items[0].file}')" if items and not known else ""
            raise TextlessError(f"no ABX token has frames: {known} of the {len(features)} feature files are named in "
                                f"the item file{example}")
        self.items_dropped = len(items) - len(self.tokens)
        self.frames = np.concatenate(chunks)
        # stable sort by (context, speaker, phone); groups[c][s] = [(start, end) per phone] over the sorted tokens
        self.order = sorted(range(len(self.tokens)),
                            key=lambda i: (self.tokens[i].context, self.tokens[i].speaker, self.tokens[i].phone))
        self.groups: list[list[list[tuple[int, int]]]] = []
        prev = None
        for pos, i in enumerate(self.order):
            t = self.tokens[i]
            key = (t.context, t.speaker, t.phone)
            if prev is None or key[0] != prev[0]:
                self.groups.append([[(pos, pos + 1)]])
            elif key[1] != prev[1]:
                self.groups[-1].append([(pos, pos + 1)])
            elif key[2] != prev[2]:
                self.groups[-1][-1].append((pos, pos + 1))
            else:
                a, _ = self.groups[-1][-1][-1]
                self.groups[-1][-1][-1] = (a, pos + 1)
            prev = key

    def ids(self, pos: int) -> _Token:
        return self.tokens[self.order[pos]]


class _Scorer:
    def __init__(self, tokens: _Tokens, distance: str, max_size_group: int, rng: random.Random):
        self.t = tokens
        self.distance = distance
        self.max_size = max_size_group
        self.rng = rng

    def group(self, span: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sampled group (the anchor's ``get_group``): frames ``[sum L, D+1]``, offsets and lengths ``[N]``."""
        take = list(range(*span))
        if len(take) > self.max_size:
            take = self.rng.sample(take, k=self.max_size)
        toks = [self.t.ids(pos) for pos in take]
        lengths = np.array([tok.size for tok in toks], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        frames = np.concatenate([self.t.frames[tok.start:tok.start + tok.size] for tok in toks])
        return frames, offsets, lengths

    def distances(self, x, y, symmetric: bool) -> np.ndarray:
        return _group_dtw(frame_distances(x[0], y[0], self.distance), x[1], x[2], y[1], y[2], symmetric)

    def theta(self, a, b, x, symmetric: bool) -> float:
        dxb = self.distances(x, b, False)
        dxa = self.distances(x, a, symmetric)
        na, nb = dxa.shape[1], dxb.shape[1]
        if symmetric:
            n_pos = na * (na - 1)
            np.fill_diagonal(dxa, np.float32(float(dxb.max()) + 1))
        else:
            n_pos = na * dxa.shape[0]
        da, db = dxa[:, :, None], dxb[:, None, :]
        return float(((da < db).sum() + 0.5 * (da == db).sum()) / (n_pos * nb))


def _within(scorer: _Scorer) -> Iterator[tuple[tuple[int, ...], float]]:
    for context_group in scorer.t.groups:
        for speaker_group in context_group:
            if len(speaker_group) == 1:
                continue
            for i_a, span_a in enumerate(speaker_group):
                if span_a[1] - span_a[0] == 1:
                    continue
                for i_b, span_b in enumerate(speaker_group):
                    if i_b == i_a:
                        continue
                    b = scorer.group(span_b)
                    a = scorer.group(span_a)
                    ta, tb = scorer.t.ids(span_a[0]), scorer.t.ids(span_b[0])
                    yield (ta.speaker, ta.phone, tb.phone, ta.context), 1 - scorer.theta(a, b, a, True)


def _across(scorer: _Scorer, max_x: int) -> Iterator[tuple[tuple[int, ...], float]]:
    spans: dict[int, dict[int, dict[int, tuple[int, int]]]] = {}
    for context_group in scorer.t.groups:
        for speaker_group in context_group:
            for span in speaker_group:
                tok = scorer.t.ids(span[0])
                spans.setdefault(tok.context, {}).setdefault(tok.phone, {})[tok.speaker] = span
    for context_group in scorer.t.groups:
        for speaker_group in context_group:
            if len(speaker_group) == 1:
                continue
            for i_a, span_a in enumerate(speaker_group):
                ta = scorer.t.ids(span_a[0])
                others = [v for k, v in spans[ta.context][ta.phone].items() if k != ta.speaker]
                if len(others) > max_x:
                    others = scorer.rng.sample(others, k=max_x)
                for span_x in others:
                    for i_b, span_b in enumerate(speaker_group):
                        if i_b == i_a:
                            continue
                        a = scorer.group(span_a)
                        b = scorer.group(span_b)
                        x = scorer.group(span_x)
                        tb, tx = scorer.t.ids(span_b[0]), scorer.t.ids(span_x[0])
                        yield (ta.speaker, ta.phone, tb.phone, ta.context, tx.speaker), 1 - scorer.theta(a, b, x,
                                                                                                        False)


def _aggregate(cells: dict[tuple[int, ...], list[float]]) -> tuple[float | None, int]:
    """Mean over contexts (and X speakers) per (speaker, A, B), then over speakers per (A, B), then over pairs."""
    per_speaker: dict[tuple[int, int], list[float]] = {}
    for (speaker, pa, pb), errors in cells.items():
        per_speaker.setdefault((pa, pb), []).append(float(np.mean(errors)))
    if not per_speaker:
        return None, 0
    return float(np.mean([np.mean(v) for v in per_speaker.values()])), len(per_speaker)


def abx_error_rates(features: Mapping[str, np.ndarray], items: Sequence[ABXItem] | str | Path, frame_shift: float,
                    *, modes: Sequence[str] = MODES, distance: str = "cosine", max_size_group: int = 10,
                    max_x_across: int = 5, seed: int = 0) -> ABXResult:
    """ABX error rates of per-file features on the tokens of an item file (see the module docstring).

    `features`: utterance id (the item file's ``#file``) -> float ``[frames, D]``, frame i at time
    ``(i + 0.5) * frame_shift`` seconds; files are taken in the mapping's order (as the anchor takes its file list),
    files the item file does not name are ignored. `items`: the tokens or an ``.item`` path. Random group sampling
    draws from ``random.Random(seed)``.
    """
    for mode in modes:
        if mode not in MODES:
            raise ConfigError(f"unknown ABX mode '{mode}' (choose from {', '.join(MODES)})")
    if distance not in DISTANCES:
        raise ConfigError(f"unknown ABX distance '{distance}' (choose from {', '.join(DISTANCES)})")
    if max_size_group < 2 or max_x_across < 1 or frame_shift <= 0:
        raise ConfigError("ABX needs max_size_group >= 2, max_x_across >= 1 and frame_shift > 0 (seconds)")
    if isinstance(items, (str, Path)):
        items = read_item_file(items)
    tokens = _Tokens(features, items, frame_shift)
    scorer = _Scorer(tokens, distance, max_size_group, random.Random(seed))
    scores: dict[str, float | None] = {"within": None, "across": None}
    counts = {"within": (0, 0), "across": (0, 0)}
    for mode in MODES:
        if mode not in modes:
            continue
        cells: dict[tuple[int, ...], list[float]] = {}
        n = 0
        for coords, error in (_within(scorer) if mode == "within" else _across(scorer, max_x_across)):
            cells.setdefault(coords[:3], []).append(error)
            n += 1
        scores[mode], pairs = _aggregate(cells)
        counts[mode] = (n, pairs)
    return ABXResult(within=scores["within"], across=scores["across"], tokens=len(tokens.tokens),
                     items_dropped=tokens.items_dropped, within_triplet_groups=counts["within"][0],
                     across_triplet_groups=counts["across"][0], phone_pairs_within=counts["within"][1],
                     phone_pairs_across=counts["across"][1])
