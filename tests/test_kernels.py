"""Exactness of nearest-centroid assignment and agreement of the dedup kernels with the numpy reference."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch

from textless.data.units import dedup as dedup_reference
from textless.tokenizers import kernels as K
from textless.tokenizers.kernels import assign, brute_force_assign, dedup, dedup_batch, dedup_torch

PATHS = [None, "cpu"]  # None: CPU GEMM + numba re-check; "cpu": the device-agnostic torch implementation


def _check(x, c, **kwargs):
    expected = brute_force_assign(x, c)
    for device in PATHS:
        got = assign(x, c, device=device, **kwargs)
        assert isinstance(got, np.ndarray) and got.dtype == np.int64
        np.testing.assert_array_equal(got, expected, err_msg=f"device={device}")
    return expected


# --------------------------------------------------------------------------------------------------------------------
# summation order pinned to numpy's


@pytest.mark.parametrize("n", [*range(140), 255, 256, 257, 511, 767, 768, 769, 1000, 1024, 2049])
def test_pairwise_sum_is_bit_identical_to_numpy(n):
    rng = np.random.default_rng(n)
    a = rng.standard_normal((4, n)) * rng.uniform(1e-3, 1e3, size=(4, n))
    np.testing.assert_array_equal(K._pairwise_sum_rows(a), a.sum(1))
    np.testing.assert_array_equal(K._torch_pairwise_sum(torch.from_numpy(a)).numpy(), a.sum(1))


def test_pairwise_order_matters():
    # the test above is meaningful: a plain sequential sum differs from numpy's in the last bits
    a = np.random.default_rng(0).standard_normal((200, 768))
    sequential = np.array([sum(row.tolist(), 0.0) for row in a])
    assert (sequential != a.sum(1)).any()


# --------------------------------------------------------------------------------------------------------------------
# assign == float64 brute force


@pytest.mark.parametrize(("n", "d", "k"), [(0, 8, 3), (1, 1, 1), (300, 1, 7), (500, 33, 1), (2000, 64, 50),
                                           (700, 300, 129)])
def test_random_data(n, d, k):
    rng = np.random.default_rng(n + d + k)
    x = rng.standard_normal((n, d)).astype(np.float32)
    c = rng.standard_normal((k, d)).astype(np.float32)
    _check(x, c)


def test_float64_centroids_and_features():
    rng = np.random.default_rng(1)
    x32 = rng.standard_normal((1500, 48)).astype(np.float32)
    c64 = rng.standard_normal((40, 48))
    _check(x32, c64)
    _check(x32.astype(np.float64) + rng.standard_normal(x32.shape) * 1e-9, c64)



@pytest.mark.parametrize("features_dtype", [np.float32, np.float64])
def test_float64_centroids_have_no_silent_float64_path(features_dtype, monkeypatch):
    """km.bin centroids are float64: the GEMM must still run in float32 (both paths), and only near-tie rows may be
    re-scored in float64 - none of the clearly separated ones, every one of the exact midpoints."""
    rng = np.random.default_rng(17)
    c = 10 * rng.standard_normal((64, 96))  # float64, not representable in float32
    assert (c.astype(np.float32).astype(np.float64) != c).any()
    x = (c[rng.integers(0, 64, 4000)] + 0.5 * rng.standard_normal((4000, 96))).astype(features_dtype)
    pairs = rng.permutation(64)[:40].reshape(20, 2)
    mid = ((c[pairs[:, 0]] + c[pairs[:, 1]]) / 2).astype(features_dtype)  # (near-)ties between two centroids
    d = ((x[:, None, :].astype(np.float64) - c[None]) ** 2).sum(-1)
    d.sort(1)
    assert (d[:, 1] - d[:, 0]).min() > 100.0  # clearly separated: far beyond the float32 error bound
    dm = ((mid[:, None, :].astype(np.float64) - c[None]) ** 2).sum(-1)
    top2 = np.sort(np.argsort(dm, 1)[:, :2], 1)
    np.testing.assert_array_equal(top2, np.sort(pairs, 1))  # the two nearest centroids of a midpoint are its pair
    expected_x, expected_mid = brute_force_assign(x, c), brute_force_assign(mid, c)

    book = K.Codebook(c)
    prep, c64, cn, weights, _, _ = book.cpu_parts()
    assert weights.dtype == np.float32 and cn.dtype == np.float32  # the CPU GEMM operand (-2 (c - m))^T [D, K]
    assert prep.cs.dtype == torch.float32 and prep.cn.dtype == torch.float32 and prep.m32.dtype == torch.float32
    assert c64.dtype == np.float64  # kept only for the re-check
    np.testing.assert_array_equal(c64, c)

    gemm_dtypes: set = set()
    np_matmul, torch_addmm = np.matmul, torch.addmm

    def spy_matmul(a, b, *args, **kwargs):
        gemm_dtypes.add(("numpy", np.asarray(a).dtype.name, np.asarray(b).dtype.name))
        return np_matmul(a, b, *args, **kwargs)

    def spy_addmm(bias, a, b, *args, **kwargs):
        gemm_dtypes.add(("torch", str(bias.dtype), str(a.dtype), str(b.dtype)))
        return torch_addmm(bias, a, b, *args, **kwargs)

    monkeypatch.setattr(np, "matmul", spy_matmul)
    monkeypatch.setattr(torch, "addmm", spy_addmm)
    for device in PATHS:
        stats: dict = {}
        np.testing.assert_array_equal(assign(x, book, device=device, stats=stats), expected_x, err_msg=str(device))
        assert stats == {"rows": 4000, "rechecked_rows": 0}, device
        both = np.concatenate([x, mid])
        stats = {}
        np.testing.assert_array_equal(assign(both, c, device=device, stats=stats),
                                      np.concatenate([expected_x, expected_mid]), err_msg=str(device))
        assert stats == {"rows": 4020, "rechecked_rows": 20}, device
    assert gemm_dtypes == {("numpy", "float32", "float32"),
                           ("torch", "torch.float32", "torch.float32", "torch.float32")}

def test_duplicate_centroids_go_to_the_lowest_index():
    rng = np.random.default_rng(2)
    base = rng.standard_normal((10, 16)).astype(np.float32)
    c = np.concatenate([base, base[::-1], base])  # each centroid three times
    x = np.concatenate([base, base + 0.01 * rng.standard_normal(base.shape).astype(np.float32)])
    labels = _check(x, c)
    assert labels.max() < 10  # always the first copy


def test_exactly_equidistant_points():
    rng = np.random.default_rng(3)
    # small integers: every float64 operation is exact, so ties are real ties
    c = rng.integers(-3, 4, size=(60, 6)).astype(np.float32)
    x = rng.integers(-3, 4, size=(3000, 6)).astype(np.float32)
    # midpoints of centroid pairs with even differences are exactly equidistant from both
    pairs = rng.integers(0, 60, size=(500, 2))
    c[pairs[:, 1]] = c[pairs[:, 0]] + 2 * rng.integers(-1, 2, size=(500, 6))
    mid = (c[pairs[:, 0]] + c[pairs[:, 1]]) / 2
    x = np.concatenate([x, mid]).astype(np.float32)
    d = ((x[:, None, :].astype(np.float64) - c[None]) ** 2).sum(-1)
    assert ((d == d.min(1, keepdims=True)).sum(1) > 1).mean() > 0.1  # plenty of ties
    _check(x, c)


def test_large_offset_near_ties():
    """x + 1000: float32 spacing there is 6e-5, so float32 scores are full of ties and cancellation; the inputs are
    float64 values that float32 cannot represent, so only the float64 re-check can get them right."""
    rng = np.random.default_rng(4)
    c = 1000.0 + 1e-3 * rng.standard_normal((30, 24))
    x = 1000.0 + 1e-3 * rng.standard_normal((2000, 24))
    _check(x, c)
    _check(x.astype(np.float32), c)
    # and without the centring that normally removes the offset: the bound alone must still be right
    prep = K._Prepared(torch.from_numpy(c), torch.device("cpu"), center=False)
    s, xs = K._scores(torch.from_numpy(x), prep)
    _, rows, _ = K._flag(s, xs, prep)
    assert rows.numel() == x.shape[0]  # everything flagged: nothing is decided by the float32 scores


def _bound_check(x: np.ndarray, c: np.ndarray, center: bool) -> float:
    prep = K._Prepared(torch.from_numpy(c), torch.device("cpu"), center=center)
    s, xs = K._scores(torch.from_numpy(x), prep)
    bound = K._bound_for_rows(xs, prep).numpy()
    m = prep.m32.double().numpy()
    xi = x.astype(np.float64) - m
    zeta = c.astype(np.float64) - m
    t = (zeta**2).sum(1)[None, :] - 2 * xi @ zeta.T  # float64: error ~1e-16 relative, far below the float32 bound
    ratio = np.abs(s.double().numpy() - t) / bound[:, None]
    assert ratio.max() <= 1.0
    # exact rational arithmetic on a few rows
    for i in range(3):
        for j in range(min(4, c.shape[0])):
            xi_q = [Fraction(float(a)) - Fraction(float(b)) for a, b in zip(x[i], m, strict=True)]
            z_q = [Fraction(float(a)) - Fraction(float(b)) for a, b in zip(c[j], m, strict=True)]
            t_q = sum(z * z for z in z_q) - 2 * sum(a * b for a, b in zip(xi_q, z_q, strict=True))
            assert abs(Fraction(float(s[i, j])) - t_q) <= Fraction(float(bound[i]))
    return float(ratio.max())


@pytest.mark.parametrize("center", [True, False])
def test_error_bound_is_never_violated(center):
    rng = np.random.default_rng(5)
    cases = [
        (1000.0 + rng.standard_normal((400, 512)), 1000.0 + rng.standard_normal((20, 512))),  # big common offset
        (rng.standard_normal((400, 1024)) * np.logspace(-3, 3, 1024), rng.standard_normal((20, 1024))),  # mixed scales
        (np.abs(rng.standard_normal((300, 2048))) + 1.0, np.abs(rng.standard_normal((10, 2048))) + 1.0),  # same sign
        (rng.standard_normal((300, 64)).astype(np.float32), rng.standard_normal((30, 64)).astype(np.float32)),
    ]
    for x, c in cases:
        worst = _bound_check(x, c, center)
        assert worst > 0  # the scores are not trivially exact


def test_flagged_rows_are_rare_on_clustered_data():
    rng = np.random.default_rng(6)
    centers = rng.standard_normal((100, 256)).astype(np.float32)
    x = centers[rng.integers(0, 100, 5000)] + 0.7 * rng.standard_normal((5000, 256)).astype(np.float32)
    x[:, :4] += 30.0  # a few large common dimensions, as in HuBERT features
    c = centers.copy()
    c[:, :4] += 30.0
    prep = K._Prepared(torch.from_numpy(c), torch.device("cpu"))
    s, xs = K._scores(torch.from_numpy(x), prep)
    _, rows, _ = K._flag(s, xs, prep)
    assert rows.numel() / x.shape[0] < 0.01
    _check(x, c)


def test_chunking_does_not_change_labels():
    rng = np.random.default_rng(7)
    x = rng.integers(-2, 3, size=(1000, 5)).astype(np.float32)  # lots of exact ties
    c = rng.integers(-2, 3, size=(40, 5)).astype(np.float32)
    expected = brute_force_assign(x, c)
    for chunk in (1, 7, 128, 999, 1000, 65536):
        for device in PATHS:
            np.testing.assert_array_equal(assign(x, c, chunk_size=chunk, device=device), expected)


def test_torch_inputs_and_outputs():
    rng = np.random.default_rng(8)
    x = torch.from_numpy(rng.standard_normal((800, 20)).astype(np.float32))
    c = torch.from_numpy(rng.standard_normal((25, 20)))
    got = assign(x, c)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.int64 and got.device.type == "cpu"
    np.testing.assert_array_equal(got.numpy(), assign(x.numpy(), c.numpy()))
    np.testing.assert_array_equal(got.numpy(), brute_force_assign(x, c))
    half = x.to(torch.bfloat16)
    np.testing.assert_array_equal(assign(half, c).numpy(), brute_force_assign(half.float(), c))


def test_threads_and_stats():
    rng = np.random.default_rng(15)
    x = rng.integers(-2, 3, size=(5000, 6)).astype(np.float32)
    c = rng.integers(-2, 3, size=(30, 6)).astype(np.float32)
    expected = brute_force_assign(x, c)
    for threads in (1, 3):
        stats: dict = {}
        np.testing.assert_array_equal(assign(x, c, num_threads=threads, chunk_size=300, stats=stats), expected)
        assert stats["rows"] == 5000 and 0 < stats["rechecked_rows"] <= 5000
    stats = {}
    assign(x, c, device="cpu", stats=stats)
    assert stats["rows"] == 5000 and stats["rechecked_rows"] > 0


def test_codebook_is_reusable():
    rng = np.random.default_rng(16)
    c = rng.standard_normal((40, 12))
    book = K.Codebook(c)
    assert (book.k, book.dim) == (40, 12)
    for n in (1, 5, 300):
        x = rng.standard_normal((n, 12)).astype(np.float32)
        expected = brute_force_assign(x, c)
        np.testing.assert_array_equal(assign(x, book), expected)
        np.testing.assert_array_equal(assign(x, book, device="cpu"), expected)
    with pytest.raises(ValueError, match="dimension"):
        assign(np.zeros((2, 5), np.float32), book)


def test_inexact_mode_is_plain_argmin():
    rng = np.random.default_rng(9)
    c = 10 * rng.standard_normal((20, 8)).astype(np.float32)
    x = c[rng.integers(0, 20, 500)] + 0.1 * rng.standard_normal((500, 8)).astype(np.float32)
    for device in PATHS:
        np.testing.assert_array_equal(assign(x, c, exact=False, device=device), brute_force_assign(x, c))


def test_fast_fp32_matmul_modes_are_overridden_and_restored():
    rng = np.random.default_rng(10)
    c = 1000.0 + 1e-3 * rng.standard_normal((10, 32))
    x = 1000.0 + 1e-3 * rng.standard_normal((300, 32))
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")
    try:
        _check(x, c)
        assert torch.get_float32_matmul_precision() == "medium"
    finally:
        torch.set_float32_matmul_precision(before)


def test_bad_inputs():
    x = np.zeros((4, 3), np.float32)
    with pytest.raises(ValueError, match="dimension"):
        assign(x, np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        assign(np.full((4, 3), np.nan, np.float32), np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        assign(x, np.array([[0, 0, np.inf]], np.float32), device="cpu")
    with pytest.raises(ValueError, match="2-D"):
        assign(np.zeros(3, np.float32), np.zeros((2, 3), np.float32))
    with pytest.raises(TypeError, match="floating"):
        assign(np.zeros((4, 3), np.int64), np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="at least one"):
        assign(x, np.zeros((0, 3), np.float32))
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="cuda"):
            assign(x, np.zeros((2, 3), np.float32), device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():  # pragma: no cover - GPU machines only
    rng = np.random.default_rng(11)
    c = 1000.0 + 1e-3 * rng.standard_normal((50, 64))
    x = 1000.0 + 1e-3 * rng.standard_normal((5000, 64))
    expected = brute_force_assign(x, c)
    np.testing.assert_array_equal(assign(x, c, device="cuda"), expected)
    got = assign(torch.from_numpy(x).cuda(), torch.from_numpy(c).cuda())
    assert got.device.type == "cuda"
    np.testing.assert_array_equal(got.cpu().numpy(), expected)


# --------------------------------------------------------------------------------------------------------------------
# dedup


def _label_arrays(rng: np.random.Generator) -> list[np.ndarray]:
    arrays = [np.zeros(0, np.int64), np.array([5]), np.full(17, 3), np.arange(20) % 2, np.arange(9)]
    for _ in range(40):
        n = int(rng.integers(0, 300))
        runs = rng.integers(1, 6, size=n)
        values = rng.integers(0, int(rng.integers(1, 8)), size=n)
        arrays.append(np.repeat(values, runs)[: int(rng.integers(0, runs.sum() + 1))])
    return arrays


def test_dedup_matches_reference():
    rng = np.random.default_rng(12)
    for a in _label_arrays(rng):
        for dtype in (np.int64, np.int32, np.uint16):
            arr = a.astype(dtype)
            ref_u, ref_d = dedup_reference(arr)
            for parallel in (True, False):
                u, d = dedup(arr, parallel=parallel)
                assert u.dtype == np.int64 and d.dtype == np.int64
                np.testing.assert_array_equal(u, ref_u)
                np.testing.assert_array_equal(d, ref_d)
            tu, td = dedup_torch(torch.from_numpy(arr.astype(np.int64)))
            np.testing.assert_array_equal(tu.numpy(), ref_u)
            np.testing.assert_array_equal(td.numpy(), ref_d)


def test_dedup_parallel_kernel(monkeypatch):
    rng = np.random.default_rng(13)
    n = 200_003
    a = np.repeat(rng.integers(0, 5, n // 2), rng.integers(1, 4, n // 2))[:n]
    a[1000:60000] = 3  # one run across several blocks
    ref_u, ref_d = dedup_reference(a)
    for blocks in (1, 2, 7, 64, 1000):
        par_u, par_d = K._dedup_parallel(a, blocks)
        np.testing.assert_array_equal(par_u, ref_u)
        np.testing.assert_array_equal(par_d, ref_d)
    monkeypatch.setattr(K, "_PARALLEL_MIN", 1000)
    monkeypatch.setattr(K, "_PARALLEL_MIN_THREADS", 1)
    u, d = dedup(a)
    np.testing.assert_array_equal(u, ref_u)
    np.testing.assert_array_equal(d, ref_d)
    same = np.full(n, 4)
    u, d = K._dedup_parallel(same, 8)
    assert u.tolist() == [4] and d.tolist() == [n]
    for tiny in (np.array([1]), np.array([1, 1]), np.array([1, 2])):
        u, d = K._dedup_parallel(tiny, 4)  # more blocks than labels
        np.testing.assert_array_equal(u, dedup_reference(tiny)[0])
        np.testing.assert_array_equal(d, dedup_reference(tiny)[1])


def test_dedup_batch_matches_reference():
    rng = np.random.default_rng(14)
    arrays = _label_arrays(rng)
    units, durations, offsets = dedup_batch(arrays)
    flat = np.concatenate(arrays)
    lengths = np.array([len(a) for a in arrays])
    in_offsets = np.concatenate([[0], np.cumsum(lengths)])
    for got in (dedup_batch((flat, in_offsets)), dedup_batch(flat, in_offsets)):
        for a, b in zip(got, (units, durations, offsets), strict=True):
            np.testing.assert_array_equal(a, b)
    assert offsets.dtype == np.int64 and offsets[0] == 0 and len(offsets) == len(arrays) + 1
    for i, a in enumerate(arrays):
        ref_u, ref_d = dedup_reference(a)
        np.testing.assert_array_equal(units[offsets[i]:offsets[i + 1]], ref_u)
        np.testing.assert_array_equal(durations[offsets[i]:offsets[i + 1]], ref_d)
    empty = dedup_batch([])
    assert [e.tolist() for e in empty] == [[], [], [0]]


def test_dedup_bad_inputs():
    with pytest.raises(ValueError, match="1-D"):
        dedup(np.zeros((2, 2), np.int64))
    with pytest.raises(TypeError, match="integers"):
        dedup(np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="offsets"):
        dedup_batch(np.arange(5), np.array([0, 3, 2]))
    with pytest.raises(ValueError, match="offsets"):
        dedup_batch(np.arange(5), np.array([0, 6]))
    with pytest.raises(ValueError, match="1-D"):
        dedup_torch(torch.zeros(2, 2, dtype=torch.int64))
