"""Hot loops of the tokenizer: nearest-centroid assignment (k-means `predict`) and run-length deduplication.

Assignment
----------
`assign(features, centroids)` returns, for every row x of `features` ``[N, D]``, the index of the nearest centroid::

    label(x) = argmin_k ||x - c_k||^2,   ties -> the LOWEST index k

and the labels are *exactly* those of the float64 brute force `brute_force_assign` (``((x[:, None, :] - c[None]) ** 2)
.sum(-1).argmin(1)`` on float64 copies; `np.argmin` returns the first minimum), bit for bit, including on ties and
near-ties. How (float32 speed, float64 answers):

1. Fast path, GEMM-bound. ``||x - c_k||^2 = ||x||^2 + T_k`` with ``T_k = ||c_k||^2 - 2 x.c_k``, and ``||x||^2`` does not
   depend on k, so the scores ``s_k = fl32(T_k)`` come from one float32 GEMM per chunk of rows (memory bounded by
   ``chunk_size`` rows). Centroids given in float64 (real ``km.bin`` files) are *cast to float32 for the GEMM*: nothing
   on the fast path runs in float64. Before the GEMM, rows and centroids are shifted
   by ``m`` = the centroids' mean (rounded to float32): distances are translation invariant and the shift removes
   large common offsets, which would otherwise blow up cancellation in ``||c||^2 - 2 x.c`` and hence the error bound.
2. A rigorous error bound. With ``xi = x - m``, ``zeta_k = c_k - m`` (exact reals), ``u = 2^-24``, ``g = gamma_{D+2} =
   (D+2)u / (1 - (D+2)u)``, ``g64`` the same with ``2^-53``, ``X >= ||xi||``, ``Z >= max_k ||zeta_k||``::

       |s_k - T_k| <= E = 1.01 * [ (g + u) Z^2 + (2g + 4u + 2u^2) X Z + g64 (X + Z)^2 ] + (2D + 4) 2^-149

   ``(g+u) Z^2 + 2g X Z``: the GEMM and the ``||c||^2 - 2 x.c`` combination in float32 in ANY summation order (blocked,
   split-K, FMA or not; the standard ``gamma_n`` bound for dot products); ``u Z^2``: rounding ``||zeta_k||^2`` to
   float32; ``(4u + 2u^2) X Z``: rounding the shifted inputs to float32 (relative ``u`` per element; float64 inputs
   are rounded once more from float64, covered by the 1.01 factor); ``g64 (X+Z)^2``: the float64 reference's own
   rounding, so that a row we do not re-check is unambiguous for the reference too; the last term: float32
   underflow. `gemm_error_bound` computes it; tests check it is never violated.
3. A row is *flagged* when some other centroid scores within ``2E`` of the best one (``s_k <= s_best + 2E``): only
   those centroids can be the exact minimum. Flagged rows are re-scored against those candidates in float64 from the
   ORIGINAL inputs (float64 centroids stay float64) with direct differences ``sum_j (x_j - c_kj)^2`` summed in exactly
   numpy's pairwise order, so the re-scored distances equal the reference's bit for bit; the minimum wins, ties go
   to the lowest index. On real features a small fraction of rows is flagged (the benchmark reports it); rows whose
   float32 scores overflow are flagged with all K candidates.

Two implementations of the same algorithm (identical labels, tested):

- CPU path (``device=None`` with numpy input or a CPU tensor): chunks of ``CPU_CHUNK`` = 512 rows are spread over a
  pool of threads (one per CPU); per chunk, a numba kernel shifts the rows to float32 and takes their norms, numpy's
  float32 GEMM runs single-threaded on the chunk, and one more numba pass forms the scores, finds best and
  runner-up, flags rows and re-scores the flagged ones in float64 (all numba kernels ``nogil``). This is
  scikit-learn's ``predict`` layout: each core works on its own cache-resident block, with no hand-offs between
  thread pools. Measured on the 2-core AMD EPYC dev VM: numpy's OpenBLAS sgemm ran ~1.6x faster than torch's MKL
  ``matmul`` (MKL takes a slow path on AMD), and numba's OpenMP workers spin-waiting between a multi-threaded GEMM
  and a parallel numba pass made the chunked alternative up to 2x slower; hence numpy BLAS and serial kernels on a
  thread pool, with BLAS limited to one thread (``threadpoolctl``) while the pool runs.
- torch implementation (an explicit ``device`` such as ``"cpu"``, ``"cuda"``, ``"cuda:1"``, or a CUDA tensor):
  everything with torch ops on that device, chunks of ``DEVICE_CHUNK`` = 65536 rows, the re-check in float64 torch
  ops (numpy's pairwise summation emulated column block by column block with elementwise adds, which are correctly
  rounded on every device). ``device="cuda"`` checks ``torch.cuda.is_available()``. Its GEMM runs with
  ``fp32_precision = "ieee"`` forced for its duration (TF32 / bf16 "fast fp32" modes would invalidate the bound); the
  previous setting is restored afterwards (a process-global torch switch: do not flip it from another thread
  meanwhile).

The error bound holds for any BLAS and any summation order, so which GEMM runs never changes the labels. ``exact=False`` skips steps 2-3 (plain float32 GEMM argmin; may differ from the
reference on near-ties): for k-means training iterations, where exactness does not matter.

Deduplication
-------------
`dedup` (one array; numba, two-pass parallel run-length for arrays of 2^22+ labels on 4+ threads), `dedup_batch` (many utterances,
numba ``prange`` over utterances) and `dedup_torch` (``torch.unique_consecutive``; GPU-capable) give the same result as
`textless.data.units.dedup`: units int64 ``[L]`` and run lengths int64 ``[L]``.

numba functions are compiled on their first call for each input dtype (about a second each; cached on disk with
``cache=True`` so later processes load them): warm them up before timing anything.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
import torch
from numba import njit, prange

__all__ = [
    "Codebook",
    "assign",
    "brute_force_assign",
    "dedup",
    "dedup_batch",
    "dedup_torch",
    "gemm_error_bound",
]

U32 = 2.0**-24  # unit roundoff of float32
U64 = 2.0**-53  # unit roundoff of float64
_SAFETY = 1.01
_PAIR_BLOCK_ELEMENTS = 1 << 22  # float64 elements per block of (row, candidate) pairs in the torch re-check


# --------------------------------------------------------------------------------------------------------------------
# Error bound
# --------------------------------------------------------------------------------------------------------------------


def _gamma(n: int, u: float) -> float:
    nu = n * u
    return nu / (1.0 - nu) if nu < 1.0 else math.inf


def _bound_coefficients(dim: int) -> tuple[float, float, float, float]:
    """``(a, b, c, tiny)`` with ``E = a Z^2 + b X Z + c (X + Z)^2 + tiny`` (the 1.01 safety factor included)."""
    g = _gamma(dim + 2, U32)
    g64 = _gamma(dim + 2, U64)
    return (_SAFETY * (g + U32), _SAFETY * (2 * g + 4 * U32 + 2 * U32 * U32), _SAFETY * g64,
            (2 * dim + 4) * 2.0**-149)


def _norm_coefficients(dim: int) -> tuple[float, float, float]:
    """``(f, t, h)``: ``||xi|| <= sqrt(sq * f + t) * h`` from the float32 ``sq = ||fl32(xi)||^2``."""
    return 1.0 + _gamma(dim + 2, U32), dim * 2.0**-149, 1.0 + 4 * U32


def gemm_error_bound(x_norm, z_max: float, dim: int):
    """Upper bound ``E`` on ``|s_k - T_k|`` for one row (see the module docstring).

    `x_norm` (float or float64 array/tensor) bounds ``||x - m||`` from above, `z_max` bounds ``max_k ||c_k - m||``,
    `dim` is D. Returns the same kind as `x_norm`.
    """
    a, b, c, tiny = _bound_coefficients(dim)
    z = float(z_max)
    return a * z * z + b * x_norm * z + c * (x_norm + z) ** 2 + tiny


def _norm_upper_bound(sq_norm32, dim: int):
    """Upper bound on ``||xi||`` from the float32 ``||fl32(xi)||^2`` (any summation order, underflow, and the
    input rounding ``||xi|| <= ||fl32(xi)|| / (1 - u')``). `sq_norm32`: float64 array or tensor of float32 values."""
    f, t, h = _norm_coefficients(dim)
    return (sq_norm32 * f + t) ** 0.5 * h


@contextlib.contextmanager
def _ieee_fp32_matmul() -> Iterator[None]:
    """Force true float32 matmuls (no TF32 / bf16 emulation) for the duration; restores the previous setting."""
    backends = [torch.backends.cuda.matmul, torch.backends.mkldnn.matmul]
    saved = [b.fp32_precision for b in backends]
    if all(s in ("ieee", "none") for s in saved) and torch.get_float32_matmul_precision() == "highest":
        yield
        return
    try:
        for b in backends:
            b.fp32_precision = "ieee"
        yield
    finally:
        for b, s in zip(backends, saved, strict=True):
            b.fp32_precision = s


# --------------------------------------------------------------------------------------------------------------------
# numba: float64 re-check with numpy's pairwise summation
# --------------------------------------------------------------------------------------------------------------------


def _pairwise_plan(n: int) -> np.ndarray:
    """numpy's pairwise summation tree for ``n`` elements as a post-order program: rows ``(lo, len)`` are leaves
    (summed by `_leaf_sum`), rows ``(-1, 0)`` add the two values on top of the stack (left + right).

    numpy (``pairwise_sum`` in ``loops_utils.h.src``): ``n < 8`` sequential from 0.0; ``n <= 128`` eight strided
    accumulators, combined as ``((r0+r1)+(r2+r3))+((r4+r5)+(r6+r7))``, then the remainder sequentially; else split
    at ``n2 = n/2 - (n/2) % 8`` and add the two halves. (numba cannot cache a recursive function, hence the program.)
    """
    ops: list[tuple[int, int]] = []

    def visit(lo: int, m: int) -> None:
        if m <= 128:
            ops.append((lo, m))
            return
        m2 = m // 2
        m2 -= m2 % 8
        visit(lo, m2)
        visit(lo + m2, m - m2)
        ops.append((-1, 0))

    visit(0, n)
    return np.array(ops, dtype=np.int64).reshape(-1, 2)


@njit(cache=True)
def _leaf_sum(a, lo, n):  # pragma: no cover - compiled
    if n < 8:
        res = 0.0
        for i in range(lo, lo + n):
            res += a[i]
        return res
    r0 = a[lo]
    r1 = a[lo + 1]
    r2 = a[lo + 2]
    r3 = a[lo + 3]
    r4 = a[lo + 4]
    r5 = a[lo + 5]
    r6 = a[lo + 6]
    r7 = a[lo + 7]
    i = 8
    stop = n - (n % 8)
    while i < stop:
        r0 += a[lo + i]
        r1 += a[lo + i + 1]
        r2 += a[lo + i + 2]
        r3 += a[lo + i + 3]
        r4 += a[lo + i + 4]
        r5 += a[lo + i + 5]
        r6 += a[lo + i + 6]
        r7 += a[lo + i + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += a[lo + i]
        i += 1
    return res


@njit(cache=True)
def _np_pairwise_sum(a, plan, stack):  # pragma: no cover - compiled
    """``a.sum()`` for float64 ``a`` bit-identical to numpy's, following ``plan = _pairwise_plan(len(a))``;
    `stack` is scratch space of at least ``len(plan)`` float64."""
    top = 0
    for p in range(plan.shape[0]):
        lo = plan[p, 0]
        if lo >= 0:
            stack[top] = _leaf_sum(a, lo, plan[p, 1])
            top += 1
        else:
            stack[top - 2] = stack[top - 2] + stack[top - 1]
            top -= 1
    return stack[0]


@njit(cache=True)
def _sq_dist64(x, r, c, k, buf, plan, stack):  # pragma: no cover - compiled
    d = x.shape[1]
    for j in range(d):
        diff = np.float64(x[r, j]) - c[k, j]
        buf[j] = diff * diff
    return _np_pairwise_sum(buf, plan, stack)


@njit(nogil=True, cache=True)
def _center_kernel(x, m, xs, sq):  # pragma: no cover - compiled
    """``xs = fl32(x - m)`` (`m` in `x`'s dtype) and ``sq = ||xs||^2`` accumulated in float32."""
    for i in range(x.shape[0]):
        acc = np.float32(0.0)
        for j in range(x.shape[1]):
            v = np.float32(x[i, j] - m[j])
            xs[i, j] = v
            acc += v * v
        sq[i] = acc


@njit(nogil=True, cache=True)
def _finish_kernel(p, cn, sq, x, c, plan, coef, exact, labels):  # pragma: no cover - compiled
    """Labels of one chunk from ``p = xs @ (-2 cs)^T``: scores ``s = p + cn`` (float32, formed here), best and
    runner-up per row; with `exact`, rows whose runner-up is within ``2E`` of the best are re-scored in float64
    (numpy's pairwise summation) against every centroid within ``2E``, ties -> lowest index. Rows with a NaN / Inf
    score are re-scored against all centroids. Returns the number of re-scored rows.

    ``coef = (a, b, c, tiny, f, t, h, z)``: the bound ``E`` and norm coefficients (`_bound_coefficients`,
    `_norm_coefficients`) and ``Z``.
    """
    n = p.shape[0]
    k = p.shape[1]
    d = x.shape[1]
    a, b, cc, tiny, f, t, h, z = coef[0], coef[1], coef[2], coef[3], coef[4], coef[5], coef[6], coef[7]
    buf = np.empty(d, np.float64)
    stack = np.empty(plan.shape[0], np.float64)
    flagged = 0
    for i in range(n):
        best = 0
        bv = p[i, 0] + cn[0]
        sv = np.float32(np.inf)
        nonfinite = bv - bv != 0
        for j in range(1, k):
            v = p[i, j] + cn[j]
            if v < bv:
                sv = bv
                bv = v
                best = j
            elif v < sv:
                sv = v
            if v - v != 0:
                nonfinite = True
        if exact:
            xn = np.sqrt(np.float64(sq[i]) * f + t) * h
            thr = np.float64(bv) + 2.0 * (a * z * z + b * xn * z + cc * (xn + z) ** 2 + tiny)
            full = nonfinite or thr - thr != 0
            if full or np.float64(sv) <= thr:
                flagged += 1
                best_d = np.inf
                best_k = -1
                for j in range(k):
                    if full or j == best or np.float64(p[i, j] + cn[j]) <= thr:
                        dist = _sq_dist64(x, i, c, j, buf, plan, stack)
                        if best_k < 0 or dist < best_d:
                            best_d = dist
                            best_k = j
                best = best_k
        labels[i] = best
    return flagged


@njit(cache=True)
def _pairwise_sum_rows_kernel(a, plan):  # pragma: no cover - compiled
    out = np.empty(a.shape[0], np.float64)
    stack = np.empty(plan.shape[0], np.float64)
    for i in range(a.shape[0]):
        out[i] = _np_pairwise_sum(a[i], plan, stack)
    return out


def _pairwise_sum_rows(a: np.ndarray) -> np.ndarray:
    """Row sums of float64 ``a [P, n]`` by the numba kernel (tests pin it to numpy's ``a.sum(1)`` bit for bit)."""
    a = np.ascontiguousarray(a, dtype=np.float64)
    return _pairwise_sum_rows_kernel(a, _pairwise_plan(a.shape[1]))


# --------------------------------------------------------------------------------------------------------------------
# torch: the same float64 re-check, device-agnostic
# --------------------------------------------------------------------------------------------------------------------


def _torch_pairwise_sum(a: torch.Tensor) -> torch.Tensor:
    """Row sums of float64 ``a [P, n]`` in numpy's pairwise order, with elementwise (correctly rounded) adds only."""
    n = a.shape[1]
    if n < 8:
        res = torch.zeros(a.shape[0], dtype=a.dtype, device=a.device)
        for i in range(n):
            res = res + a[:, i]
        return res
    if n <= 128:
        r = a[:, :8].clone()
        stop = n - n % 8
        for i in range(8, stop, 8):
            r += a[:, i:i + 8]
        res = ((r[:, 0] + r[:, 1]) + (r[:, 2] + r[:, 3])) + ((r[:, 4] + r[:, 5]) + (r[:, 6] + r[:, 7]))
        for i in range(stop, n):
            res = res + a[:, i]
        return res
    n2 = n // 2
    n2 -= n2 % 8
    return _torch_pairwise_sum(a[:, :n2]) + _torch_pairwise_sum(a[:, n2:])


def _recheck_torch(x: torch.Tensor, pair_rows: torch.Tensor, pair_cands: torch.Tensor, num_rows: int,
                   c64: torch.Tensor) -> torch.Tensor:
    """Lowest-index float64 argmin per row over (row, candidate) pairs sorted by row then candidate.

    `x` ``[M, D]`` holds the flagged rows (original dtype), `pair_rows` index into it. Returns int64 ``[M]``.
    """
    dev = x.device
    k_total = c64.shape[0]
    best_val = torch.full((num_rows,), math.inf, dtype=torch.float64, device=dev)
    best_k = torch.full((num_rows,), k_total, dtype=torch.int64, device=dev)
    block = max(1, _PAIR_BLOCK_ELEMENTS // max(1, x.shape[1]))
    for lo in range(0, pair_rows.numel(), block):
        r = pair_rows[lo:lo + block]
        k = pair_cands[lo:lo + block]
        diff = x[r].double() - c64[k]
        dist = _torch_pairwise_sum(diff * diff)
        blk_min = torch.full((num_rows,), math.inf, dtype=torch.float64, device=dev)
        blk_min = blk_min.scatter_reduce(0, r, dist, "amin")
        at_min = dist == blk_min[r]
        blk_k = torch.full((num_rows,), k_total, dtype=torch.int64, device=dev)
        blk_k = blk_k.scatter_reduce(0, r, torch.where(at_min, k, k_total), "amin")
        # pairs are in ascending candidate order, so an earlier block wins ties; inf distances (float64 overflow)
        # still pick the lowest index, like np.argmin
        better = (blk_min < best_val) | ((best_k == k_total) & (blk_k < k_total))
        best_val = torch.where(better, blk_min, best_val)
        best_k = torch.where(better, blk_k, best_k)
    return best_k


# --------------------------------------------------------------------------------------------------------------------
# assign
# --------------------------------------------------------------------------------------------------------------------


class _Prepared:
    """Centroids prepared once per `assign` call on one device."""

    def __init__(self, centroids: torch.Tensor, device: torch.device, center: bool = True):
        c64 = centroids.to(device=device, dtype=torch.float64)
        self.k, self.dim = c64.shape
        self.c64 = c64.contiguous()
        if center:
            self.m32 = c64.mean(0).float()
        else:
            self.m32 = torch.zeros(self.dim, dtype=torch.float32, device=device)
        zeta = c64 - self.m32.double()
        self.cs = zeta.float().contiguous()  # rounded once from the float64 difference
        z_sq = (zeta * zeta).sum(1)
        self.cn = z_sq.float()  # ||zeta_k||^2 rounded to float32
        z_max = float(z_sq.max().sqrt()) if self.k else 0.0
        self.z_max = z_max * (1.0 + _gamma(self.dim + 2, U64)) * (1.0 + U64)


def _scores(xc: torch.Tensor, prep: _Prepared) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 scores ``s [n, K]`` (``~ ||x - c_k||^2 - ||x - m||^2``) and the shifted float32 rows ``xs``."""
    if xc.dtype == torch.float32:
        xs = xc - prep.m32
    else:
        xs = (xc.double() - prep.m32.double()).float()
    with _ieee_fp32_matmul():
        s = torch.addmm(prep.cn, xs, prep.cs.T, beta=1.0, alpha=-2.0)
    return s, xs


def _bound_for_rows(xs: torch.Tensor, prep: _Prepared) -> torch.Tensor:
    """float64 ``E`` per row (`gemm_error_bound` with a rigorous upper bound of ``||x - m||``)."""
    sq = torch.linalg.vecdot(xs, xs, dim=1)
    x_norm = _norm_upper_bound(sq.double(), prep.dim)
    return gemm_error_bound(x_norm, prep.z_max, prep.dim)


def _flag(s: torch.Tensor, xs: torch.Tensor, prep: _Prepared, xc: torch.Tensor | None = None, offset: int = 0):
    """Best index per row, and for the flagged rows: their indices and the candidate mask ``[M, K]``.

    Overwrites the best score of each row in `s` (to find the runner-up with a second ``min`` pass, cheaper than
    counting candidates over the whole ``[n, K]`` block).
    """
    best_val, best_idx = s.min(1)
    sq = torch.linalg.vecdot(xs, xs, dim=1)
    if xc is not None:
        _check_suspects(xc, sq, offset)
    bound = gemm_error_bound(_norm_upper_bound(sq.double(), prep.dim), prep.z_max, prep.dim)
    thr = best_val.double() + 2.0 * bound
    # thr32 >= thr: round to float32, then one step up (including a candidate too many is harmless)
    thr32 = torch.nextafter(thr.float(), torch.tensor(math.inf, dtype=torch.float32, device=s.device))
    full = ~(torch.isfinite(best_val) & torch.isfinite(thr))
    if s.shape[1] > 1:
        s.scatter_(1, best_idx[:, None], math.inf)
        second = s.min(1)[0]
        flagged = (second <= thr32) | full
    else:
        flagged = full
    rows = flagged.nonzero().squeeze(1)
    if rows.numel() == 0:
        return best_idx, rows, None
    cand = s[rows] <= thr32[rows, None]
    cand[torch.arange(rows.numel(), device=s.device), best_idx[rows]] = True
    cand[full[rows]] = True
    return best_idx, rows, cand


def _as_tensor(a, name: str) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        t = a.detach()
    else:
        arr = np.asarray(a)
        if arr.dtype == np.float16:
            arr = arr.astype(np.float32)
        t = torch.from_numpy(arr) if arr.dtype.kind == "f" else torch.as_tensor(arr)
    if t.ndim != 2:
        raise ValueError(f"{name} must be 2-D [rows, dim], got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        raise TypeError(f"{name} must be floating point, got {t.dtype}")
    if t.dtype not in (torch.float32, torch.float64):
        t = t.float()  # float16 / bfloat16 are exactly representable in float32
    return t


def _check_finite(t: torch.Tensor, name: str, offset: int = 0) -> None:
    if t.numel() and not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).any(1).nonzero()[0, 0])
        raise ValueError(f"{name} contain NaN or Inf (row {offset + bad})")


def _check_suspects(xc: torch.Tensor, row_values, offset: int) -> None:
    """NaN / Inf in a row of `xc` makes its per-row reduction `row_values` non-finite (so do huge finite values,
    which are fine): only those rows are checked element by element."""
    finite = torch.isfinite(row_values) if isinstance(row_values, torch.Tensor) else np.isfinite(row_values)
    if not bool(finite.all()):
        suspects = (~finite).nonzero()[0] if isinstance(finite, np.ndarray) else (~finite).nonzero().squeeze(1)
        for r in suspects.tolist():
            _check_finite(xc[r:r + 1], "features", offset + r)


def _resolve_device(device) -> torch.device:
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {str(device)!r} requested but torch.cuda.is_available() is False")
    return dev


class Codebook:
    """Centroids ``[K, D]`` prepared once for many `assign` calls: checked (finite, non-empty), shifted and rounded to
    float32 for the GEMM, with the float64 originals kept for the re-check; cached per device. Pass it to `assign`
    in place of the centroids when labelling many small batches (per-utterance calls): preparing K x D centroids
    costs about as much as labelling a few hundred frames. Treat it as immutable.
    """

    def __init__(self, centroids):
        if isinstance(centroids, Codebook):
            centroids = centroids.centroids
        c = _as_tensor(centroids, "centroids")
        if c.shape[0] < 1:
            raise ValueError("centroids must hold at least one row")
        _check_finite(c, "centroids")
        self.centroids = c
        self.k, self.dim = int(c.shape[0]), int(c.shape[1])
        self._prepared: dict[torch.device, _Prepared] = {}
        self._cpu_parts: tuple | None = None
        self._lock = threading.Lock()

    def prepared(self, device: torch.device) -> _Prepared:
        with self._lock:
            prep = self._prepared.get(device)
            if prep is None:
                prep = self._prepared[device] = _Prepared(self.centroids, device)
            return prep

    def cpu_parts(self) -> tuple:
        """What the CPU path needs: (prep, float64 centroids, cn, -2 cs^T [D, K], pairwise plan, bound coefficients)."""
        prep = self.prepared(torch.device("cpu"))
        with self._lock:
            if self._cpu_parts is None:
                coef = np.array([*_bound_coefficients(prep.dim), *_norm_coefficients(prep.dim), prep.z_max],
                                dtype=np.float64)
                weights = np.ascontiguousarray((-2.0 * prep.cs).T.numpy())  # scaling by -2 is exact
                self._cpu_parts = (prep, prep.c64.numpy(), prep.cn.numpy(), weights, _pairwise_plan(prep.dim), coef)
            return self._cpu_parts


# rows per task on the CPU path: the [rows, K] scores stay in L2 for the label pass (best of 256-4096 at D=768, K=500)
CPU_CHUNK = 512
DEVICE_CHUNK = 65536  # rows per step of the torch implementation (large GEMMs keep a GPU busy)


def assign(features, centroids, *, device=None, chunk_size: int | None = None, exact: bool = True,
           num_threads: int | None = None, stats: dict | None = None):
    """Nearest-centroid labels: int64 ``[N]``, ``argmin_k ||x - c_k||^2`` with ties broken to the lowest index.

    `features` ``[N, D]`` and `centroids` ``[K, D]``: float32 or float64 numpy arrays or torch tensors (float16 and
    bfloat16 are widened to float32); `centroids` may also be a `Codebook` (prepared once, for repeated calls). With ``exact=True`` (default) the labels equal `brute_force_assign` exactly; see
    the module docstring for the algorithm and the error bound. Labels do not depend on `chunk_size` (rows per
    step; default 512 on the CPU path, 65536 for the torch implementation; memory ~ ``chunk_size * (D + K) * 4``
    bytes per thread besides the inputs).

    `device=None`: the CPU path (numba + numpy BLAS, `num_threads` worker threads, default: the CPUs this process may
    use) for numpy input and CPU tensors; a CUDA tensor runs on its device. An explicit `device` (``"cpu"``,
    ``"cuda"``, ``"cuda:1"``) runs the torch implementation there. Returns ``np.ndarray`` for numpy `features`, else
    a tensor (on the compute device). NaN / Inf inputs raise ``ValueError``. The first call compiles the numba
    kernels (cached on disk). If `stats` is a dict, it receives ``rows`` and ``rechecked_rows`` (rows re-scored in
    float64 because a second centroid was within the error bound).
    """
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    tensor_in = isinstance(features, torch.Tensor)
    x = _as_tensor(features, "features")
    book = centroids if isinstance(centroids, Codebook) else Codebook(centroids)
    if x.shape[1] != book.dim:
        raise ValueError(f"features have dimension {x.shape[1]} but centroids have {book.dim}")
    counter = [0]
    if device is None and x.device.type == "cpu":
        labels = _assign_numba(x, book, chunk_size or CPU_CHUNK, exact, num_threads, counter)
        result = torch.from_numpy(labels) if tensor_in else labels
    else:
        dev = _resolve_device(device if device is not None else x.device)
        labels_t = _assign_torch(x, book.prepared(dev), dev, chunk_size or DEVICE_CHUNK, exact, counter)
        result = labels_t if tensor_in else labels_t.cpu().numpy()
    if stats is not None:
        stats.update(rows=int(x.shape[0]), rechecked_rows=counter[0])
    return result


def _cpu_workers(num_threads: int | None) -> int:
    if num_threads is not None:
        return max(1, int(num_threads))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


_BLAS_CONTROLLER: list = []  # threadpoolctl.ThreadpoolController, created once (inspecting the loaded libraries
                             # takes milliseconds; limiting through it afterwards takes microseconds)


@contextlib.contextmanager
def _single_threaded_blas() -> Iterator[None]:
    """Run BLAS single-threaded while our own threads split the work (what scikit-learn does in `predict`)."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        yield
        return
    if not _BLAS_CONTROLLER:
        _BLAS_CONTROLLER.append(ThreadpoolController())
    with _BLAS_CONTROLLER[0].limit(limits=1, user_api="blas"):
        yield


def _assign_numba(x: torch.Tensor, book: Codebook, chunk_size: int, exact: bool,
                  num_threads: int | None = None, counter: list[int] | None = None) -> np.ndarray:
    """CPU path: chunks of rows go to a pool of threads; each chunk: numba centring, numpy's float32 GEMM (its
    bundled BLAS, single-threaded), one numba pass for labels + flagging + float64 re-check (nogil kernels)."""
    prep, c64, cn, weights, plan, coef = book.cpu_parts()
    x_np = np.ascontiguousarray(x.numpy())
    m = prep.m32.numpy() if x_np.dtype == np.float32 else prep.m32.double().numpy()
    n = x_np.shape[0]
    labels = np.empty(n, dtype=np.int64)
    starts = range(0, n, chunk_size)
    workers = min(_cpu_workers(num_threads), len(starts))

    local = threading.local()  # per-thread buffers, reused across chunks

    def run(lo: int) -> int:
        if not hasattr(local, "xs"):
            rows = min(chunk_size, n)
            local.xs = np.empty((rows, prep.dim), np.float32)
            local.sq = np.empty(rows, np.float32)
            local.p = np.empty((rows, prep.k), np.float32)
        xc = x_np[lo:lo + chunk_size]
        r = xc.shape[0]
        xs, sq, p = local.xs[:r], local.sq[:r], local.p[:r]
        _center_kernel(xc, m, xs, sq)
        if not np.isfinite(sq).all():
            _check_suspects(torch.from_numpy(xc), sq, lo)
        np.matmul(xs, weights, out=p)
        return _finish_kernel(p, cn, sq, xc, c64, plan, coef, exact, labels[lo:lo + r])

    rechecked = 0
    if workers <= 1:
        for lo in starts:
            rechecked += run(lo)
    else:
        with _single_threaded_blas(), ThreadPoolExecutor(workers) as pool:
            rechecked = sum(pool.map(run, starts))
    if counter is not None:
        counter[0] += int(rechecked)
    return labels


def _assign_torch(x: torch.Tensor, prep: _Prepared, dev: torch.device, chunk_size: int, exact: bool,
                  counter: list[int] | None = None) -> torch.Tensor:
    n = x.shape[0]
    labels = torch.empty(n, dtype=torch.int64, device=dev)
    for lo in range(0, n, chunk_size):
        xc = x[lo:lo + chunk_size].to(dev)
        s, xs = _scores(xc, prep)
        if not exact:
            values, idx = s.min(1)
            _check_suspects(xc, values, lo)
            labels[lo:lo + xc.shape[0]] = idx
            continue
        best, rows, cand = _flag(s, xs, prep, xc, lo)
        if cand is not None:
            nz = cand.nonzero()
            best[rows] = _recheck_torch(xc[rows], nz[:, 0], nz[:, 1], rows.numel(), prep.c64)
            if counter is not None:
                counter[0] += int(rows.numel())
        labels[lo:lo + xc.shape[0]] = best
    return labels


def brute_force_assign(features, centroids, *, chunk_size: int = 1024) -> np.ndarray:
    """The reference: ``((x[:, None, :] - c[None]) ** 2).sum(-1).argmin(1)`` on float64 copies (slow; for tests and
    benchmarks). Ties go to the lowest index (``np.argmin`` returns the first minimum)."""
    x = np.asarray(features.cpu() if isinstance(features, torch.Tensor) else features, dtype=np.float64)
    c = np.asarray(centroids.cpu() if isinstance(centroids, torch.Tensor) else centroids, dtype=np.float64)
    step = max(1, chunk_size * 64 // max(1, c.shape[0]))
    out = np.empty(x.shape[0], dtype=np.int64)
    for lo in range(0, x.shape[0], step):
        out[lo:lo + step] = ((x[lo:lo + step, None, :] - c[None]) ** 2).sum(-1).argmin(1)
    return out


# --------------------------------------------------------------------------------------------------------------------
# Deduplication (run-length encoding)
# --------------------------------------------------------------------------------------------------------------------

_PARALLEL_MIN = 1 << 22  # below this many labels the serial kernel wins (thread start-up)
_PARALLEL_MIN_THREADS = 4  # on the 2-vCPU dev VM the two-pass parallel kernel took 1.8x the serial one's time
                           # (memory-bound loop; benchmarks/tokenize_kernels.py reports both kernels)


# Run-length kernels. Branch-free inner loops: ``j += a[i] != a[i - 1]`` and unconditional stores of the unit and
# of the run's last index ("ends"); with short random runs a data-dependent branch mispredicts constantly (measured:
# 2.5x slower). Durations are differences of consecutive ends.


@njit(cache=True)
def _dedup_serial(a):  # pragma: no cover - compiled
    n = a.shape[0]
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    count = 1
    for i in range(1, n):
        count += a[i] != a[i - 1]
    units = np.empty(count, np.int64)
    ends = np.empty(count, np.int64)
    units[0] = a[0]
    ends[0] = 0
    j = 0
    for i in range(1, n):
        j += a[i] != a[i - 1]
        units[j] = a[i]
        ends[j] = i
    durations = ends  # converted in place: duration = end - previous end
    prev = -1
    for r in range(count):
        e = ends[r]
        durations[r] = e - prev
        prev = e
    return units, durations


@njit(parallel=True, cache=True)
def _dedup_parallel(a, num_blocks):  # pragma: no cover - compiled
    """Two passes over blocks: count run starts per block, prefix-sum, then write units and run ends; a run that
    crosses into the next block(s) is written by the block where it starts and its end fixed up afterwards."""
    n = a.shape[0]
    size = (n + num_blocks - 1) // num_blocks
    counts = np.zeros(num_blocks, np.int64)
    for b in prange(num_blocks):
        lo = b * size
        hi = min(n, lo + size)
        cnt = 0
        if lo < hi:
            cnt = 1 if lo == 0 else np.int64(a[lo] != a[lo - 1])
            for i in range(lo + 1, hi):
                cnt += a[i] != a[i - 1]
        counts[b] = cnt
    offsets = np.zeros(num_blocks + 1, np.int64)
    for b in range(num_blocks):
        offsets[b + 1] = offsets[b] + counts[b]
    total = offsets[num_blocks]
    units = np.empty(total, np.int64)
    ends = np.empty(total, np.int64)
    prefix_end = np.full(num_blocks, -1, np.int64)  # last index of the run continued from the previous block
    for b in prange(num_blocks):
        lo = b * size
        hi = min(n, lo + size)
        i = lo
        if b > 0:
            while i < hi and a[i] == a[i - 1]:
                i += 1
            prefix_end[b] = i - 1 if i > lo else -1
        if i < hi:
            j = offsets[b]
            units[j] = a[i]
            ends[j] = i
            for t in range(i + 1, hi):
                j += a[t] != a[t - 1]
                units[j] = a[t]
                ends[j] = t
    for b in range(1, num_blocks):  # in block order, so a run spanning several blocks ends up with its true end
        if prefix_end[b] >= 0:
            ends[offsets[b] - 1] = prefix_end[b]
    durations = np.empty(total, np.int64)
    for r in prange(total):
        durations[r] = ends[r] - (ends[r - 1] if r > 0 else -1)
    return units, durations


@njit(parallel=True, cache=True)
def _dedup_batch_kernel(flat, offsets):  # pragma: no cover - compiled
    m = offsets.shape[0] - 1
    counts = np.zeros(m, np.int64)
    for u in prange(m):
        lo = offsets[u]
        hi = offsets[u + 1]
        cnt = 0
        if hi > lo:
            cnt = 1
            for i in range(lo + 1, hi):
                cnt += flat[i] != flat[i - 1]
        counts[u] = cnt
    new_offsets = np.zeros(m + 1, np.int64)
    for u in range(m):
        new_offsets[u + 1] = new_offsets[u] + counts[u]
    total = new_offsets[m]
    units = np.empty(total, np.int64)
    durations = np.empty(total, np.int64)
    for u in prange(m):
        lo = offsets[u]
        hi = offsets[u + 1]
        if hi > lo:
            j = new_offsets[u]
            units[j] = flat[lo]
            durations[j] = lo
            for i in range(lo + 1, hi):
                j += flat[i] != flat[i - 1]
                units[j] = flat[i]
                durations[j] = i  # run ends for now
            prev = lo - 1
            for r in range(new_offsets[u], new_offsets[u + 1]):
                e = durations[r]
                durations[r] = e - prev
                prev = e
    return units, durations, new_offsets


def _as_labels(labels, name: str = "labels") -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.dtype.kind not in "iub":
        raise TypeError(f"{name} must hold integers, got dtype {arr.dtype}")
    if arr.dtype.kind == "b":
        arr = arr.astype(np.uint8)
    return np.ascontiguousarray(arr)


def dedup(labels: np.ndarray, *, parallel: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Run-length encode integer `labels` ``[T]`` -> (units int64 ``[L]``, durations int64 ``[L]``).

    Same result as `textless.data.units.dedup`. Arrays of at least 2^22 labels use a two-pass parallel kernel
    (``parallel=True`` and at least 4 numba threads); otherwise a serial loop. Both are branch-free in the
    inner loop. The first call per dtype compiles.
    """
    arr = _as_labels(labels)
    threads = numba.get_num_threads()
    if parallel and threads >= _PARALLEL_MIN_THREADS and arr.shape[0] >= _PARALLEL_MIN:
        return _dedup_parallel(arr, max(threads * 4, arr.shape[0] // (1 << 22)))
    return _dedup_serial(arr)


def dedup_batch(labels: list[np.ndarray] | tuple[np.ndarray, np.ndarray],
                offsets: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Deduplicate many utterances at once (numba, parallel over utterances).

    `labels` is either a list of 1-D integer arrays (one per utterance), or the flat form: a ``(flat, offsets)``
    tuple, or ``dedup_batch(flat, offsets)``, with flat labels ``[total]`` and int64 offsets ``[N + 1]`` (utterance i
    is ``flat[offsets[i]:offsets[i + 1]]``, offsets non-decreasing within ``[0, total]``). Returns flat units int64,
    flat durations int64 and the new offsets int64 ``[N + 1]`` (from 0); an empty utterance stays empty. The first
    call per dtype compiles.
    """
    if offsets is None and isinstance(labels, tuple):
        if len(labels) != 2:
            raise ValueError("the flat form is a (flat labels, offsets) tuple; pass utterances as a list")
        labels, offsets = labels
    if offsets is None:
        parts = [_as_labels(u, f"labels[{i}]") for i, u in enumerate(labels)]
        offsets_arr = np.zeros(len(parts) + 1, dtype=np.int64)
        np.cumsum([len(p) for p in parts], out=offsets_arr[1:])
        flat = np.concatenate([p.astype(np.int64, copy=False) for p in parts]) if parts else np.zeros(0, np.int64)
    else:
        flat = _as_labels(labels, "flat labels")
        offsets_arr = np.asarray(offsets)
        if offsets_arr.ndim != 1 or offsets_arr.shape[0] < 1 or offsets_arr.dtype.kind not in "iu":
            raise ValueError(f"offsets must be 1-D integers with at least one entry, got {offsets_arr.dtype} "
                             f"{offsets_arr.shape}")
        offsets_arr = np.ascontiguousarray(offsets_arr, dtype=np.int64)
        if offsets_arr[0] < 0 or offsets_arr[-1] > flat.shape[0] or np.any(np.diff(offsets_arr) < 0):
            raise ValueError(f"offsets must be non-decreasing within [0, {flat.shape[0]}]")
    return _dedup_batch_kernel(flat, offsets_arr)


def dedup_torch(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Run-length encode a 1-D integer tensor on its device: (units int64, durations int64), via
    ``torch.unique_consecutive(return_counts=True)``."""
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.is_complex():
        raise TypeError(f"labels must hold integers, got {labels.dtype}")
    units, counts = torch.unique_consecutive(labels, return_counts=True)
    return units.to(torch.int64), counts.to(torch.int64)
