"""Benchmark the tokenizer kernels: k-means assignment, run-length dedup, and k-means fitting backends.

    python benchmarks/tokenize_kernels.py            # full run (a few minutes on 2 cores)
    python benchmarks/tokenize_kernels.py --quick    # smoke run (small sizes; the numbers mean little)
    python -m benchmarks.tokenize_kernels --quick    # same, as a module

Writes ``benchmarks/results/tokenize_kernels_<device>.json`` (``..._quick.json`` with ``--quick``) and prints a
summary. Every timing is the best of ``--repeats`` runs after one warm-up run (numba compiles on first use).

1. Assignment, N x D features against K centroids (default 200k x 768, K=500): scikit-learn ``predict`` (a
   MiniBatchKMeans holding the same centroids), the fairseq/GSLM numpy ``ApplyKmeans`` formula (written out here as
   the baseline; applied in chunks of 65536 rows), and ``textless.tokenizers.kernels.assign`` with float32 centroids,
   float64 centroids (as in real km.bin files) and the torch implementation on the CPU; plus this machine's plain
   float32 GEMM ``x @ C.T`` (same shapes, same run), measured four ways: one whole-array ``torch.matmul`` and
   ``numpy.matmul`` (``fp32_gemm``, ``fp32_gemm_numpy``; these write the whole ``[N, K]`` output, 400 MB at the
   default shape, and can run slower than the assignment itself), and the same GEMM in chunks of
   ``kernels.CPU_CHUNK`` rows into a per-thread output buffer reused for every chunk, spread over a pool of one
   thread per CPU with single-threaded BLAS inside, as the CPU assignment path runs its GEMMs
   (``fp32_gemm_chunked``: ``numpy.matmul(..., out=)``, the GEMM the CPU path calls; ``fp32_gemm_chunked_torch``:
   ``torch.matmul(..., out=)``). The fastest of the four is the ceiling (``fraction_of_gemm_speed`` = fastest
   GEMM time / method time; ``gemm_ceiling`` names it). Achieved GFLOP/s = 2 N K D / seconds.
   Exactness: labels compared with the float64 brute force on the first rows (``--check-rows``).
   The features are synthetic but shaped like SSL features: K clusters plus noise, with a few large common
   dimensions (HuBERT has such outlier dimensions), float32.
2. Dedup of 10M labels (runs of random length 1-5): numba (``dedup`` as dispatched: parallel two-pass from 2^22
   labels; the two-pass parallel kernel and the serial kernel on their own), ``dedup_batch``
   over utterances of ~1000 frames, ``torch.unique_consecutive``, the numpy reference, and a plain Python loop
   (timed on 1M labels and scaled linearly to 10M, as reported).
3. k-means fit of the same features (default 50k x 64, k=100) with each backend and the same iteration budget
   (``max_iter``): fit seconds and inertia (mean squared distance, computed the same way for all).
"""

from __future__ import annotations

import os
import sys

# Run as a script, this folder is sys.path[0], where benchmarks/tokenize.py would shadow the standard library's
# `tokenize` (imported by numpy via inspect/linecache): drop it before anything else is imported.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import argparse
import datetime as dt
import json
import platform
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from textless.data.units import dedup as dedup_numpy
from textless.tokenizers import kernels
from textless.tokenizers.kmeans import KMeans

RESULTS = Path(__file__).resolve().parent / "results"


def timed(fn: Callable[[], Any], repeats: int, warmup: bool = True) -> tuple[float, Any, list[float]]:
    """Best-of-`repeats` seconds (after one warm-up call), the last result, and all timings."""
    if warmup:
        fn()
    times, result = [], None
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times), result, [round(t, 4) for t in times]


def write_results(path: Path, results: Any, indent: int = 2) -> None:
    """A benchmark's results as JSON at `path` (parent folders created; written atomically, so an interrupted run
    leaves the previous file intact). Shared by every script under benchmarks/."""
    from textless.utils.atomic import atomic_write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(results, indent=indent) + "\n")


def machine_info(device: str) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).resolve().parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    import faiss
    import numba
    import sklearn

    flags: list[str] = []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx512_vnni")
                flags = [f for f in line.split(":", 1)[1].split() if f in wanted]
                break
    except OSError:
        pass
    info = {
        "device": device,
        "cpu": cpu,
        "cpu_matrix_flags": flags,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "numba_threads": numba.get_num_threads(),
        "numba_threading_layer": None,
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "numba": numba.__version__,
                     "faiss": faiss.__version__, "sklearn": sklearn.__version__, "numpy": np.__version__},
        "git_commit": commit,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def synthetic_features(n: int, d: int, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """float32 features [n, d] around k centres (+ 4 large common dimensions), and those centres."""
    rng = np.random.default_rng(seed)
    centers = (0.6 * rng.standard_normal((k, d))).astype(np.float32)
    centers[:, :4] += 25.0
    x = np.empty((n, d), dtype=np.float32)
    step = 50000
    for lo in range(0, n, step):
        m = min(step, n - lo)
        x[lo:lo + m] = centers[rng.integers(0, k, m)] + rng.standard_normal((m, d), dtype=np.float32)
    return x, centers


class ApplyKmeansNumpy:
    """The fairseq/GSLM ``ApplyKmeans`` numpy formula (dump_km_label.py), the usual way km.bin models are applied:
    ``dist = ||x||^2 - 2 x C + ||C||^2``, argmin; C in the km.bin's dtype (float64 -> a float64 GEMM)."""

    def __init__(self, centroids: np.ndarray):
        self.c = centroids.T
        self.c_norm = (self.c**2).sum(0, keepdims=True)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        dist = (x**2).sum(1, keepdims=True) - 2 * np.matmul(x, self.c) + self.c_norm
        return np.argmin(dist, axis=1)


def chunked(fn: Callable[[np.ndarray], np.ndarray], x: np.ndarray, size: int = 65536) -> np.ndarray:
    return np.concatenate([fn(x[lo:lo + size]) for lo in range(0, x.shape[0], size)])


def sklearn_model(centroids: np.ndarray):
    from sklearn.cluster import MiniBatchKMeans

    k, d = centroids.shape
    model = MiniBatchKMeans(n_clusters=k, n_init=1, max_iter=1, batch_size=2 * k, random_state=0)
    model.fit(np.random.default_rng(0).standard_normal((2 * k, d)).astype(centroids.dtype))
    model.cluster_centers_ = centroids.copy()
    return model


def chunked_gemm(x, c_t, lib: str, chunk_size: int = kernels.CPU_CHUNK, num_threads: int | None = None) -> None:
    """``x @ c_t`` (``[N, D] @ [D, K]``, float32) the way `kernels.assign`'s CPU path runs its GEMMs: chunks of
    `chunk_size` rows spread over a pool of threads (one per CPU), each thread writing into its own ``[chunk, K]``
    buffer reused for every chunk (``out=``), BLAS single-threaded meanwhile (threadpoolctl for numpy's BLAS,
    ``torch.set_num_threads(1)`` for torch's). `lib`: ``"numpy"`` (numpy arrays) or ``"torch"`` (CPU tensors). The
    products are thrown away: this measures the GEMM alone."""
    n, k = x.shape[0], c_t.shape[1]
    starts = range(0, n, chunk_size)
    workers = min(kernels._cpu_workers(num_threads), len(starts))
    local = threading.local()

    def run(lo: int) -> None:
        if not hasattr(local, "buf"):
            rows = min(chunk_size, n)
            local.buf = np.empty((rows, k), np.float32) if lib == "numpy" else torch.empty(rows, k)
        xc = x[lo:lo + chunk_size]
        if lib == "numpy":
            np.matmul(xc, c_t, out=local.buf[:xc.shape[0]])
        else:
            torch.matmul(xc, c_t, out=local.buf[:xc.shape[0]])

    if workers <= 1:
        for lo in starts:
            run(lo)
        return
    torch_threads = torch.get_num_threads()
    try:
        if lib == "torch":
            torch.set_num_threads(1)  # read by each new pool thread on its first torch op
        with kernels._single_threaded_blas(), ThreadPoolExecutor(workers) as pool:
            for _ in pool.map(run, starts):
                pass
    finally:
        torch.set_num_threads(torch_threads)


def rechecked_fraction(x: np.ndarray, c: np.ndarray) -> float:
    """Fraction of rows whose float32 scores were within the error bound of a second centroid (re-scored in
    float64), as counted by the CPU path itself."""
    stats: dict[str, int] = {}
    kernels.assign(x, c, stats=stats)
    return stats["rechecked_rows"] / max(1, stats["rows"])


def bench_assign(n: int, d: int, k: int, repeats: int, check_rows: int, device: str) -> dict[str, Any]:
    x, c32 = synthetic_features(n, d, k)
    rng = np.random.default_rng(1)
    c64 = c32.astype(np.float64) + 1e-4 * rng.standard_normal(c32.shape)  # float64 values float32 cannot hold
    flops = 2.0 * n * k * d
    check = slice(0, min(check_rows, n))
    truth32 = kernels.brute_force_assign(x[check], c32)
    truth64 = kernels.brute_force_assign(x[check], c64)

    xt = torch.from_numpy(x)
    ct = torch.from_numpy(c32)
    gemm_s, _, gemm_all = timed(lambda: torch.matmul(xt, ct.T), repeats)
    cT = np.ascontiguousarray(c32.T)
    np_gemm_s, _, np_gemm_all = timed(lambda: np.matmul(x, cT), repeats)
    chunk_s, _, chunk_all = timed(lambda: chunked_gemm(x, cT, "numpy"), repeats)
    cTt = torch.from_numpy(cT)
    chunk_t_s, _, chunk_t_all = timed(lambda: chunked_gemm(xt, cTt, "torch"), repeats)
    pool = f"chunks of kernels.CPU_CHUNK = {kernels.CPU_CHUNK} rows into a per-thread [chunk, K] buffer reused per " \
           f"chunk (out=), {min(kernels._cpu_workers(None), -(-n // kernels.CPU_CHUNK))} pool thread(s) (one per " \
           f"CPU), single-threaded BLAS, as the assign CPU path runs its GEMMs"
    gemms = {
        "fp32_gemm": {"seconds": round(gemm_s, 4), "gflops": round(flops / gemm_s / 1e9, 1), "all_seconds": gemm_all,
                      "what": "torch.matmul(x, C.T), whole array"},
        "fp32_gemm_numpy": {"seconds": round(np_gemm_s, 4), "gflops": round(flops / np_gemm_s / 1e9, 1),
                            "all_seconds": np_gemm_all, "what": "numpy.matmul(x, C.T), whole array (numpy's BLAS)"},
        "fp32_gemm_chunked": {"seconds": round(chunk_s, 4), "gflops": round(flops / chunk_s / 1e9, 1),
                              "all_seconds": chunk_all, "what": f"numpy.matmul(x[i:j], C.T, out=buf) in {pool}"},
        "fp32_gemm_chunked_torch": {"seconds": round(chunk_t_s, 4), "gflops": round(flops / chunk_t_s / 1e9, 1),
                                    "all_seconds": chunk_t_all,
                                    "what": f"torch.matmul(x[i:j], C.T, out=buf) in {pool} (torch.set_num_threads(1))"},
    }
    raw = {"fp32_gemm": gemm_s, "fp32_gemm_numpy": np_gemm_s, "fp32_gemm_chunked": chunk_s,
           "fp32_gemm_chunked_torch": chunk_t_s}
    ceiling = min(raw, key=raw.__getitem__)
    ceiling_s = raw[ceiling]
    sk = sklearn_model(c32)
    apply32, apply64 = ApplyKmeansNumpy(c32), ApplyKmeansNumpy(c64)
    methods: dict[str, tuple[Callable[[], np.ndarray], np.ndarray]] = {
        "sklearn_predict": (lambda: sk.predict(x), truth32),
        "fairseq_numpy_f32_centroids": (lambda: chunked(apply32, x), truth32),
        "fairseq_numpy_f64_centroids": (lambda: chunked(apply64, x), truth64),
        "textless_assign_f32": (lambda: kernels.assign(x, c32), truth32),
        "textless_assign_f64_centroids": (lambda: kernels.assign(x, c64), truth64),
        "textless_assign_torch_cpu": (lambda: kernels.assign(x, c32, device="cpu"), truth32),
        "textless_assign_inexact": (lambda: kernels.assign(x, c32, exact=False), truth32),
    }
    out: dict[str, Any] = {"shape": {"N": n, "D": d, "K": k}, "check_rows": check.stop, **gemms,
                           "gemm_ceiling": ceiling,
                           "rechecked_fraction_f32": rechecked_fraction(x, c32),
                           "rechecked_fraction_f64_centroids": rechecked_fraction(x, c64),
                           "methods": {}}
    for name, (fn, truth) in methods.items():
        seconds, labels, all_s = timed(fn, repeats)
        out["methods"][name] = {"seconds": round(seconds, 4), "gflops": round(flops / seconds / 1e9, 1),
                                "fraction_of_gemm_speed": round(ceiling_s / seconds, 3),
                                "labels_identical_to_brute_force": bool(np.array_equal(labels[check], truth)),
                                "all_seconds": all_s}
    out["overlapping_data"] = bench_overlapping(min(n, 50000), d, k, repeats, check)
    base = out["methods"]["sklearn_predict"]["seconds"]
    for entry in out["methods"].values():
        entry["speedup_vs_sklearn"] = round(base / entry["seconds"], 2)
    if device.startswith("cuda"):
        xg = xt.to(device)
        cg = ct.to(device)
        g_gemm, _, _ = timed(lambda: torch.matmul(xg, cg.T), repeats)
        g_np, lab_np, _ = timed(lambda: kernels.assign(x, c32, device=device), repeats)
        g_t, lab_t, _ = timed(lambda: kernels.assign(xg, cg), repeats)
        g_64, lab_64, _ = timed(lambda: kernels.assign(xg, torch.from_numpy(c64).to(device)), repeats)
        cpu_s = out["methods"]["textless_assign_f32"]["seconds"]
        out["cuda"] = {
            "fp32_gemm": {"seconds": round(g_gemm, 4), "gflops": round(flops / g_gemm / 1e9, 1)},
            "assign_numpy_in_out": {"seconds": round(g_np, 4), "speedup_vs_cpu": round(cpu_s / g_np, 2),
                                    "labels_identical_to_brute_force": bool(np.array_equal(lab_np[check], truth32))},
            "assign_on_device": {"seconds": round(g_t, 4), "gflops": round(flops / g_t / 1e9, 1),
                                 "speedup_vs_cpu": round(cpu_s / g_t, 2),
                                 "labels_identical_to_brute_force":
                                     bool(np.array_equal(lab_t[check].cpu().numpy(), truth32))},
            "assign_on_device_f64_centroids": {
                "seconds": round(g_64, 4),
                "labels_identical_to_brute_force": bool(np.array_equal(lab_64[check].cpu().numpy(), truth64))},
        }
    return out


def bench_overlapping(n: int, d: int, k: int, repeats: int, check: slice) -> dict[str, Any]:
    """A harder case for the re-check: anisotropic Gaussian features with a large common offset and centroids drawn
    from the data, so nearest and second-nearest centroids are often close (real SSL features lie in between)."""
    rng = np.random.default_rng(4)
    scales = np.geomspace(0.05, 5.0, d).astype(np.float32)
    x = (rng.standard_normal((n, d), dtype=np.float32) * scales + 10.0).astype(np.float32)
    c = x[rng.choice(n, size=k, replace=False)].astype(np.float64) + 1e-3 * rng.standard_normal((k, d))
    truth = kernels.brute_force_assign(x[check], c)
    exact_s, labels, _ = timed(lambda: kernels.assign(x, c), repeats)
    inexact_s, _, _ = timed(lambda: kernels.assign(x, c, exact=False), repeats)
    return {"shape": {"N": n, "D": d, "K": k}, "rechecked_fraction": rechecked_fraction(x, c),
            "seconds_exact": round(exact_s, 4), "seconds_inexact": round(inexact_s, 4),
            "labels_identical_to_brute_force": bool(np.array_equal(labels[check], truth))}


def python_loop_dedup(labels: list[int]) -> tuple[list[int], list[int]]:
    units: list[int] = []
    durations: list[int] = []
    for u in labels:
        if units and units[-1] == u:
            durations[-1] += 1
        else:
            units.append(u)
            durations.append(1)
    return units, durations


def bench_dedup(n: int, python_n: int, repeats: int, device: str) -> dict[str, Any]:
    import numba

    rng = np.random.default_rng(2)
    runs = rng.integers(1, 6, size=n // 2)
    labels = np.repeat(rng.integers(0, 500, size=runs.size), runs)[:n].astype(np.int64)
    ref_u, ref_d = dedup_numpy(labels)
    lengths = rng.integers(500, 1500, size=n // 500)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    offsets = offsets[offsets <= n]
    offsets[-1] = n
    lt = torch.from_numpy(labels)
    methods: dict[str, Callable[[], Any]] = {
        "numba_dedup_default": lambda: kernels.dedup(labels),
        "numba_two_pass_parallel": lambda: kernels._dedup_parallel(labels, 4 * numba.get_num_threads()),
        "numba_serial": lambda: kernels.dedup(labels, parallel=False),
        "numba_dedup_batch": lambda: kernels.dedup_batch(labels, offsets),
        "torch_unique_consecutive": lambda: kernels.dedup_torch(lt),
        "numpy_reference": lambda: dedup_numpy(labels),
    }
    out: dict[str, Any] = {"n_labels": n, "n_runs": int(ref_u.size), "methods": {}}
    for name, fn in methods.items():
        seconds, result, all_s = timed(fn, repeats)
        if name == "numba_dedup_batch":
            same = None  # per-utterance runs: checked against the reference per utterance below
            u, d, new_off = result
            same = all(np.array_equal(u[new_off[i]:new_off[i + 1]], dedup_numpy(labels[offsets[i]:offsets[i + 1]])[0])
                       for i in range(0, len(offsets) - 1, max(1, (len(offsets) - 1) // 50)))
        else:
            u, d = (r.numpy() if isinstance(r, torch.Tensor) else r for r in result)
            same = bool(np.array_equal(u, ref_u) and np.array_equal(d, ref_d))
        out["methods"][name] = {"seconds": round(seconds, 4), "labels_per_second": round(n / seconds),
                                "identical_to_reference": same, "all_seconds": all_s}
    sample = labels[:python_n].tolist()
    py_s, (pu, _), _ = timed(lambda: python_loop_dedup(sample), 1, warmup=False)
    out["methods"]["python_loop"] = {
        "seconds": round(py_s * n / python_n, 4), "measured_on": python_n,
        "note": f"timed on the first {python_n} labels and scaled linearly to {n}",
        "identical_to_reference": pu == dedup_numpy(labels[:python_n])[0].tolist()}
    if device.startswith("cuda"):
        lg = lt.to(device)
        g_s, _, _ = timed(lambda: kernels.dedup_torch(lg), repeats)
        out["methods"]["torch_unique_consecutive_cuda"] = {"seconds": round(g_s, 4), "labels_per_second": round(n / g_s)}
    py = out["methods"]["python_loop"]["seconds"]
    ref = out["methods"]["numpy_reference"]["seconds"]
    for entry in out["methods"].values():
        entry["speedup_vs_python"] = round(py / entry["seconds"], 1)
        entry["speedup_vs_numpy"] = round(ref / entry["seconds"], 2)
    return out


def bench_fit(n: int, d: int, k: int, max_iter: int, device: str) -> dict[str, Any]:
    x, _ = synthetic_features(n, d, k, seed=3)
    x[:, :4] -= 25.0
    runs = {
        "faiss": {"backend": "faiss"},
        "torch": {"backend": "torch", "device": device},
        "sklearn_n_init_1": {"backend": "sklearn", "n_init": 1},
        "sklearn_fairseq_defaults": {"backend": "sklearn"},
    }
    out: dict[str, Any] = {"shape": {"N": n, "D": d, "K": k}, "max_iter": max_iter,
                           "note": "faiss/torch: max_iter Lloyd iterations (torch stops early when no label changes);"
                                   " sklearn: max_iter passes of mini-batches (batch 10000) with early stopping "
                                   "(max_no_improvement=100); n_init=20 is fairseq's default", "backends": {}}
    for name, overrides in runs.items():
        model = KMeans(k=k, max_iter=max_iter, seed=0, **overrides)
        start = time.perf_counter()
        model.fit(x)
        seconds = time.perf_counter() - start
        out["backends"][name] = {"seconds": round(seconds, 3), "backend_seconds": model.metadata["fit_seconds"],
                                 "inertia": round(model.metadata["inertia"], 5), "fit_info": model.metadata["fit_info"]}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: check that everything runs")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--check-rows", type=int, default=5000)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    quick = args.quick
    repeats = args.repeats or (1 if quick else 3)
    info = machine_info(args.device)
    print(f"# {info['cpu']} ({info['cpu_count']} CPUs), device {args.device}, torch {torch.__version__}", flush=True)

    t0 = time.perf_counter()
    results: dict[str, Any] = {"machine": info, "quick": quick}
    shape = (20000, 768, 100) if quick else (200000, 768, 500)
    results["assign"] = bench_assign(*shape, repeats=repeats, check_rows=min(args.check_rows, 2000 if quick else 10**9),
                                     device=args.device)
    _print_assign(results["assign"])
    results["dedup"] = bench_dedup(10**6 if quick else 10**7, 10**5 if quick else 10**6, repeats, args.device)
    results["machine"]["numba_threading_layer"] = _threading_layer()
    _print_table("dedup", results["dedup"]["methods"], ("seconds", "speedup_vs_python", "speedup_vs_numpy",
                                                        "identical_to_reference"))
    fit_shape = (5000, 16, 10, 10) if quick else (50000, 64, 100, 25)
    results["fit"] = bench_fit(*fit_shape, device=args.device)
    _print_table("k-means fit", results["fit"]["backends"], ("seconds", "inertia"))
    results["total_seconds"] = round(time.perf_counter() - t0, 1)

    slug = args.device.replace(":", "")
    out = args.out or RESULTS / f"tokenize_kernels_{slug}{'_quick' if quick else ''}.json"
    write_results(out, results)
    print(f"# wrote {out} ({results['total_seconds']} s)")
    return 0


def _threading_layer() -> str | None:
    import numba

    try:
        return numba.threading_layer()
    except ValueError:  # no parallel numba function has run
        return None


def _print_assign(res: dict[str, Any]) -> None:
    s = res["shape"]
    gemms = ", ".join(f"{label} {res[key]['seconds']} s = {res[key]['gflops']} GFLOP/s"
                      for key, label in (("fp32_gemm", "torch"), ("fp32_gemm_numpy", "numpy"),
                                         ("fp32_gemm_chunked", "numpy chunked"),
                                         ("fp32_gemm_chunked_torch", "torch chunked")))
    print(f"\n## assign N={s['N']} D={s['D']} K={s['K']}: fp32 GEMM {gemms} (ceiling: {res['gemm_ceiling']}); "
          f"rows re-checked in float64: "
          f"{res['rechecked_fraction_f32']:.4%} (f32 centroids), {res['rechecked_fraction_f64_centroids']:.4%} "
          f"(f64 centroids)")
    _print_table(None, res["methods"], ("seconds", "gflops", "fraction_of_gemm_speed", "speedup_vs_sklearn",
                                        "labels_identical_to_brute_force"))
    print("overlapping data:", json.dumps(res["overlapping_data"]))
    if "cuda" in res:
        print("cuda:", json.dumps(res["cuda"]))


def _print_table(title: str | None, rows: dict[str, dict[str, Any]], cols: tuple[str, ...]) -> None:
    if title:
        print(f"\n## {title}")
    print(f"{'':34s}" + "".join(f"{c[:24]:>26s}" for c in cols))
    for name, row in rows.items():
        print(f"{name:34s}" + "".join(f"{row.get(c, '')!s:>26s}" for c in cols))
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
