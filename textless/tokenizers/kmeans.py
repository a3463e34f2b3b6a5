"""k-means for speech units: fitting (faiss / torch / scikit-learn), exact prediction, and a safe centroid file format.

The file format is safetensors: one tensor ``"centroids"`` ``[K, D]`` (float32 for models fitted here; float64 when
converted from a scikit-learn ``km.bin``, so labels stay identical to the original model's) and string metadata, each
value JSON-encoded (``k``, ``dim``, ``backend``, ``inertia``, ``n_features``, ``seed``, the config, the encoder identity
and layer given by the caller...). Loading it never runs code.

The anchors' ``km.bin`` files (fairseq / GSLM / TWIST ``learn_kmeans.py``) are ``joblib.dump`` pickles of a whole
``sklearn.cluster.MiniBatchKMeans``; only ``cluster_centers_`` matters. A pickle can run arbitrary code when loaded,
so `KMeans.load` refuses it unless ``trust_pickle=True`` and says how to convert it once::

    KMeans.load("km.bin", trust_pickle=True).save("km500.safetensors")
    textless kmeans init_from=km.bin trust_pickle=true encoder=... layer=... output=tok/   # a tokenizer bundle

Prediction is `textless.tokenizers.kernels.assign` (through a cached `kernels.Codebook`): labels equal the float64
brute-force argmin exactly (ties -> lowest index), with the GEMM in float32. scikit-learn's own ``predict`` computes
GEMM distances in the centroids' precision, so it agrees with these labels except on near-ties. A km.bin's
``cluster_centers_`` have the dtype of the features it was fitted on (float32 for fairseq's feature dumps, float64 if
fitted on float64); both are kept as they are. Fitting expects float32 features ``[N, D]``; choosing/sampling them is the caller's
job (the CLI samples).

Backends (`KMeansConfig.backend`, dispatched through `BACKENDS`):

- ``"faiss"`` (default): ``faiss.Kmeans`` with ``niter = max_iter`` Lloyd iterations, all N points (faiss's own
  subsampling to 256 points per centroid is switched off: sampling is the caller's job), GPU when ``device`` is CUDA
  and the faiss build has GPUs.
- ``"torch"``: full-batch Lloyd on ``device`` (a mini-batch variant was not needed: the CLI feeds a sample that fits in
  memory, and full batches are deterministic and converge exactly). Assignment by `kernels.assign` (``exact=False``
  during iterations, exact for the final inertia), centroid sums with ``index_add_`` in float64, empty clusters
  re-seeded to the points farthest from their centroid, stop when no label changes (or after ``max_iter``, or when
  the centroid shift is below ``tol``, sklearn's definition). Deterministic for a given seed and device.
- ``"sklearn"``: ``MiniBatchKMeans`` with exactly fairseq's parameters (``examples/hubert/simple_kmeans/
  learn_kmeans.py``): k-means++, max_iter 100, batch_size 10000, tol 0, max_no_improvement 100, init_size None
  (sklearn then uses ``3 * batch_size`` points, at least ``3 * k``), n_init 20, reassignment_ratio 0,
  compute_labels False. fairseq seeds numpy's global RNG (``np.random.seed(seed)``) and passes no random_state; we pass
  ``random_state=seed``, the same stream when fairseq does not subsample (``--percent -1``).

``init="k-means++"`` for faiss and torch is our greedy k-means++ (sklearn's variant: ``2 + ln k`` candidates per step,
keep the one that lowers the potential most) on ``init_size`` random points (same default as sklearn's);
``init="random"`` picks k distinct random points (faiss: its own random init).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from textless.errors import ConfigError, FormatError
from textless.tokenizers import kernels
from textless.utils.atomic import atomic_path
from textless.utils.versioned import artifact

__all__ = ["BACKENDS", "KMeans", "KMeansConfig", "convert_pickle", "kmeans_plusplus", "load_sklearn_pickle"]

KMEANS = artifact("textless.kmeans", 1, "a textless k-means model", legacy_names=("textless-kmeans",))
CENTROIDS_KEY = "centroids"

_SAFETENSORS_SUFFIX = ".safetensors"
_NPY_MAGIC = b"\x93NUMPY"
# How pickles and joblib's compressed containers start: pickle protocol 2+ (0x80), zlib, gzip, bz2, xz, lzma, lz4,
# and joblib < 0.10's own zlib container.
_PICKLE_MAGICS = (b"\x80", b"x\x01", b"x\x5e", b"x\x9c", b"x\xda", b"\x1f\x8b", b"BZh", b"\xfd7zXZ", b"]\x00\x00",
                  b"\x04\x22\x4d\x18", b"ZF")


@dataclass
class KMeansConfig:
    """k-means settings. Fields marked (sklearn) only affect the sklearn backend; defaults are fairseq's."""

    k: int = 500
    backend: str = "faiss"  # "faiss" | "torch" | "sklearn"
    max_iter: int = 100  # faiss/torch: Lloyd iterations; sklearn: passes over the data (MiniBatchKMeans max_iter)
    seed: int = 0
    init: str = "k-means++"  # "k-means++" | "random"
    batch_size: int = 10000  # (sklearn) mini-batch size
    n_init: int = 20  # (sklearn) initialisations tried; faiss and torch run one
    max_no_improvement: int = 100  # (sklearn) early stopping on the smoothed batch inertia
    init_size: int | None = None  # points used by the k-means++ / random init; None = 3 * batch_size (>= 3 k), <= N
    reassignment_ratio: float = 0.0  # (sklearn)
    tol: float = 0.0  # sklearn + torch: stop when the centroid shift^2 <= tol * mean feature variance; 0 = off
    device: str = "cpu"  # torch backend device (and faiss GPU when CUDA and available)

    def validate(self) -> None:
        def bad(field: str, why: str) -> ConfigError:
            return ConfigError(f"kmeans.{field}: {why}, got {getattr(self, field)!r}")

        for field in ("k", "max_iter", "batch_size", "n_init", "max_no_improvement"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise bad(field, "must be an integer >= 1")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise bad("seed", "must be an integer >= 0")
        if self.backend not in BACKENDS:
            raise bad("backend", f"must be one of {', '.join(sorted(BACKENDS))}")
        if self.init not in ("k-means++", "random"):
            raise bad("init", "must be 'k-means++' or 'random'")
        if self.init_size is not None and (isinstance(self.init_size, bool) or not isinstance(self.init_size, int)
                                           or self.init_size < 1):
            raise bad("init_size", "must be None or an integer >= 1")
        for field in ("reassignment_ratio", "tol"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise bad(field, "must be a finite number >= 0")
        try:
            torch.device(self.device)
        except (RuntimeError, TypeError):
            raise bad("device", "is not a torch device") from None

    def resolved_init_size(self, n: int) -> int:
        """sklearn's rule: init_size None -> 3 * batch_size, at least 3 * k; never more than n."""
        size = self.init_size
        if size is None:
            size = 3 * self.batch_size
            if size < self.k:
                size = 3 * self.k
        return max(min(size, n), min(self.k, n))


# --------------------------------------------------------------------------------------------------------------------
# Initialisation
# --------------------------------------------------------------------------------------------------------------------


def _sample_rows(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    if size >= n:
        return np.arange(n)
    return np.sort(rng.choice(n, size=size, replace=False))


def kmeans_plusplus(x: torch.Tensor, k: int, rng: np.random.Generator) -> torch.Tensor:
    """Greedy k-means++ (Arthur & Vassilvitskii; sklearn's ``2 + ln k`` local trials) on float32 rows `x` (any device).

    Returns ``[k, D]`` float32 centers chosen among the rows. Random draws come from `rng`, so results depend only on
    its seed (and on float rounding of the device).
    """
    n = x.shape[0]
    trials = 2 + int(math.log(k))
    sq = torch.linalg.vecdot(x, x, dim=1)

    def dist_to(rows: torch.Tensor) -> torch.Tensor:  # [len(rows), n] squared distances, float32, >= 0
        c = x[rows]
        d = torch.addmm(sq[None, :], c, x.T, alpha=-2.0) + sq[rows][:, None]
        return d.clamp_min_(0.0)

    chosen = [int(rng.integers(n))]
    closest = dist_to(torch.tensor(chosen, device=x.device))[0].double()
    potential = float(closest.sum())
    for _ in range(1, k):
        cumulative = torch.cumsum(closest, 0)
        draws = torch.as_tensor(rng.random(trials) * potential, dtype=torch.float64, device=x.device)
        cand = torch.searchsorted(cumulative, draws).clamp_(max=n - 1)
        new_closest = torch.minimum(closest[None, :], dist_to(cand).double())
        pots = new_closest.sum(1)
        best = int(torch.argmin(pots))
        chosen.append(int(cand[best]))
        closest = new_closest[best]
        potential = float(pots[best])
    return x[torch.tensor(chosen, device=x.device)].clone()


def _initial_centroids(x: torch.Tensor, config: KMeansConfig, rng: np.random.Generator) -> torch.Tensor:
    rows = torch.as_tensor(_sample_rows(x.shape[0], config.resolved_init_size(x.shape[0]), rng), device=x.device)
    sample = x[rows]
    if config.init == "random":
        pick = torch.as_tensor(_sample_rows(sample.shape[0], config.k, rng), device=x.device)
        return sample[pick].clone()
    return kmeans_plusplus(sample, config.k, rng)


# --------------------------------------------------------------------------------------------------------------------
# Backends: (float32 features [N, D] numpy, config) -> (float32 centroids [K, D], info dict)
# --------------------------------------------------------------------------------------------------------------------


def _fit_faiss(x: np.ndarray, config: KMeansConfig) -> tuple[np.ndarray, dict[str, Any]]:
    import faiss

    n, d = x.shape
    use_gpu = torch.device(config.device).type == "cuda" and hasattr(faiss, "get_num_gpus") \
        and faiss.get_num_gpus() > 0
    km = faiss.Kmeans(d, config.k, niter=config.max_iter, seed=config.seed, spherical=False, verbose=False,
                      max_points_per_centroid=n // config.k + 1, min_points_per_centroid=1, gpu=use_gpu)
    init = None
    if config.init == "k-means++":
        rng = np.random.default_rng(config.seed)
        init = _initial_centroids(torch.from_numpy(x), config, rng).numpy()
    km.train(x, init_centroids=init)
    return np.ascontiguousarray(km.centroids, dtype=np.float32), {"iterations": config.max_iter, "gpu": bool(use_gpu)}


def _fit_sklearn(x: np.ndarray, config: KMeansConfig) -> tuple[np.ndarray, dict[str, Any]]:
    from sklearn.cluster import MiniBatchKMeans

    model = MiniBatchKMeans(
        n_clusters=config.k, init=config.init, max_iter=config.max_iter, batch_size=config.batch_size, verbose=0,
        compute_labels=False, tol=config.tol, max_no_improvement=config.max_no_improvement,
        init_size=config.init_size, n_init=config.n_init, reassignment_ratio=config.reassignment_ratio,
        random_state=config.seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*init_size.*")  # sklearn warns when init_size is capped at N
        model.fit(x)
    info = {"steps": int(getattr(model, "n_steps_", 0)), "iterations": int(getattr(model, "n_iter_", 0))}
    return np.ascontiguousarray(model.cluster_centers_, dtype=np.float32), info


def _sq_dist_to_assigned(x: torch.Tensor, c: torch.Tensor, labels: torch.Tensor, chunk: int) -> torch.Tensor:
    out = torch.empty(x.shape[0], dtype=torch.float32, device=x.device)
    for lo in range(0, x.shape[0], chunk):
        diff = x[lo:lo + chunk] - c[labels[lo:lo + chunk]]
        out[lo:lo + chunk] = torch.linalg.vecdot(diff, diff, dim=1)
    return out


def _fit_torch(x_np: np.ndarray, config: KMeansConfig) -> tuple[np.ndarray, dict[str, Any]]:
    dev = torch.device(config.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"kmeans.device is {config.device!r} but torch.cuda.is_available() is False")
    x = torch.from_numpy(x_np).to(dev)
    n, d = x.shape
    k = config.k
    chunk = max(1, (1 << 24) // max(d, k))
    rng = np.random.default_rng(config.seed)
    c = _initial_centroids(x, config, rng)
    tol_abs = config.tol * float(x.double().var(0, unbiased=False).mean()) if config.tol > 0 else 0.0
    labels_prev: torch.Tensor | None = None
    iterations, converged, reseeded = 0, False, 0
    for _ in range(config.max_iter):
        labels = kernels.assign(x, c, device=None if dev.type == "cpu" else dev, exact=False)
        if labels_prev is not None and torch.equal(labels, labels_prev):
            converged = True
            break
        iterations += 1
        sums = torch.zeros(k, d, dtype=torch.float64, device=dev)
        for lo in range(0, n, chunk):
            sums.index_add_(0, labels[lo:lo + chunk], x[lo:lo + chunk].double())
        counts = torch.bincount(labels, minlength=k)
        new_c = (sums / counts.clamp_min(1)[:, None].double()).float()
        empty = (counts == 0).nonzero().squeeze(1)
        if empty.numel():
            # re-seed empty clusters to the points farthest from their current centroid (stable order: lowest index
            # first among equal distances)
            dist = _sq_dist_to_assigned(x, c, labels, chunk)
            far = torch.sort(dist, descending=True, stable=True).indices[:empty.numel()]
            new_c[empty] = x[far]
            reseeded += int(empty.numel())
        shift = float(((new_c.double() - c.double()) ** 2).sum())
        c = new_c
        labels_prev = labels
        if empty.numel() == 0 and tol_abs > 0 and shift <= tol_abs:
            converged = True
            break
    info = {"iterations": iterations, "converged": converged, "reseeded_empty": reseeded, "device": str(dev)}
    return c.cpu().numpy().astype(np.float32), info


BACKENDS: dict[str, Callable[[np.ndarray, KMeansConfig], tuple[np.ndarray, dict[str, Any]]]] = {
    "faiss": _fit_faiss,
    "torch": _fit_torch,
    "sklearn": _fit_sklearn,
}


# --------------------------------------------------------------------------------------------------------------------
# Pickles (km.bin): refused unless trusted
# --------------------------------------------------------------------------------------------------------------------


def _conversion_hint(path: Path) -> str:
    target = path.with_suffix(_SAFETENSORS_SUFFIX).name
    return (f"convert it once, if you trust the file: `KMeans.load('{path}', trust_pickle=True).save('{target}')` "
            f"or make a tokenizer bundle from it: `textless kmeans init_from={path} trust_pickle=true encoder=<encoder> "
            f"layer=<layer> output=<dir>`")


@contextlib.contextmanager
def _legacy_sklearn_modules() -> Iterator[None]:
    """Let pickles from old scikit-learn (< 0.24, module ``sklearn.cluster.k_means_``) find today's classes."""
    added = []
    try:
        import sklearn.cluster._kmeans as current

        for old in ("sklearn.cluster.k_means_",):
            if old not in sys.modules:
                sys.modules[old] = current
                added.append(old)
        yield
    finally:
        for old in added:
            sys.modules.pop(old, None)


def _joblib_load_trusted(path: Path, trust_pickle: bool) -> Any:
    """Unpickle `path` with joblib - only after the caller's explicit opt-in ``trust_pickle is True``; refused
    (`FormatError`) otherwise."""
    if trust_pickle is not True:
        raise FormatError(path, "loading a pickle can run arbitrary code; pass trust_pickle=True only for a file you "
                                "trust")
    import joblib

    with _legacy_sklearn_modules(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # InconsistentVersionWarning: expected for km.bin files from old sklearn
        return joblib.load(path)  # trust_pickle is True: checked above


def load_sklearn_pickle(path: str | Path, *, trust_pickle: bool = False) -> Any:
    """Unpickle a scikit-learn k-means ``km.bin`` (joblib) and return the model, patched to run on this sklearn.

    The ONLY place textless loads a pickle: unpickling can execute arbitrary code, so it runs only with
    ``trust_pickle=True`` (an explicit statement that the file is trusted) and refuses otherwise. Old pickles may lack ``_n_threads``
    (added in sklearn 0.23; ``predict`` needs it), which is set here. Raises `FormatError` when the file cannot be
    unpickled or holds something other than a k-means model.
    """
    path = Path(path)
    try:
        model = _joblib_load_trusted(path, trust_pickle)
    except FormatError:
        raise
    except Exception as e:  # noqa: BLE001 - anything from a foreign pickle is the file's problem, reported on one line
        raise FormatError(path, f"cannot unpickle ({type(e).__name__}: {e}); a km.bin written by another "
                                f"scikit-learn version may need that version to load") from None
    centers = getattr(model, "cluster_centers_", None)
    if centers is None:
        kind = f"{type(model).__module__}.{type(model).__qualname__}"
        raise FormatError(path, f"the pickle holds a {kind}, not a scikit-learn k-means model (no cluster_centers_)")
    if not hasattr(model, "_n_threads"):
        try:
            from sklearn.utils._openmp_helpers import _openmp_effective_n_threads

            model._n_threads = _openmp_effective_n_threads()
        except ImportError:  # pragma: no cover - very old / very new sklearn
            import os

            model._n_threads = os.cpu_count() or 1
    return model


def convert_pickle(src: str | Path, dst: str | Path, *, trust_pickle: bool = False) -> Path:
    """``km.bin`` (a joblib pickle) -> safetensors at `dst`; returns `dst`. Unpickles only with the caller's explicit
    ``trust_pickle=True`` (`FormatError` otherwise)."""
    return KMeans.load(src, trust_pickle=trust_pickle).save(dst)


# --------------------------------------------------------------------------------------------------------------------
# KMeans
# --------------------------------------------------------------------------------------------------------------------


def _as_float_matrix(a: Any, name: str) -> np.ndarray:
    arr = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D [N, D], got shape {arr.shape}")
    if arr.dtype.kind != "f":
        raise TypeError(f"{name} must be floating point, got {arr.dtype}")
    return arr


def _check_centroids(path: Path, centers: Any) -> np.ndarray:
    arr = np.asarray(centers)
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise FormatError(path, f"centroids must be a non-empty 2-D [K, D] array, got shape {arr.shape}")
    if arr.dtype not in (np.float32, np.float64):
        raise FormatError(path, f"centroids must be float32 or float64, got {arr.dtype}")
    if not np.isfinite(arr).all():
        raise FormatError(path, "centroids contain NaN or Inf")
    return np.ascontiguousarray(arr)


def _versions() -> dict[str, str]:
    out = {"torch": torch.__version__, "numpy": np.__version__}
    for mod in ("faiss", "sklearn"):
        m = sys.modules.get(mod)
        if m is not None:
            out[mod] = getattr(m, "__version__", "?")
    return out


class KMeans:
    """A k-means codebook: fit, predict exact labels, save/load as safetensors.

    ``centroids`` is float32 ``[K, D]``; ``exact_centroids`` keeps the precision the model came with (float64 for a
    converted ``km.bin``) and defines the labels. ``metadata`` is a JSON-compatible dict saved with the file.
    """

    def __init__(self, config: KMeansConfig | None = None, **overrides: Any):
        base = config if config is not None else KMeansConfig()
        try:
            self.config = dataclasses.replace(base, **overrides)
        except TypeError:
            known = {f.name for f in dataclasses.fields(KMeansConfig)}
            unknown = sorted(set(overrides) - known)
            raise ConfigError(f"unknown k-means option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}") \
                from None
        self.config.validate()
        self._centroids: np.ndarray | None = None
        self._centroids32: np.ndarray | None = None
        self._codebook: kernels.Codebook | None = None
        self.metadata: dict[str, Any] = {}

    # -- state ---------------------------------------------------------------------------------------------------

    @classmethod
    def from_centroids(cls, centroids: Any, metadata: dict[str, Any] | None = None, **overrides: Any) -> KMeans:
        """A model from given centroids ``[K, D]`` (float32 or float64, kept as given)."""
        arr = _as_float_matrix(centroids, "centroids")
        if arr.dtype not in (np.float32, np.float64):
            arr = arr.astype(np.float32)
        if not np.isfinite(arr).all():
            raise ValueError("centroids contain NaN or Inf")
        model = cls(k=int(arr.shape[0]), **overrides)
        model._set_centroids(np.ascontiguousarray(arr))
        model.metadata = {**(metadata or {}), "k": int(arr.shape[0]), "dim": int(arr.shape[1])}
        return model

    def _set_centroids(self, centroids: np.ndarray) -> None:
        self._centroids = centroids
        self._centroids32 = centroids if centroids.dtype == np.float32 else centroids.astype(np.float32)
        self._codebook = None

    @property
    def codebook(self) -> kernels.Codebook:
        """The centroids prepared for `kernels.assign` (built on first use, reused by every `predict`)."""
        if self._codebook is None:
            self._codebook = kernels.Codebook(self._require_fitted())
        return self._codebook

    def _require_fitted(self) -> np.ndarray:
        if self._centroids is None:
            raise RuntimeError("this KMeans has no centroids yet: call fit() or KMeans.load()")
        return self._centroids

    @property
    def centroids(self) -> np.ndarray:
        """float32 ``[K, D]`` (a float32 copy when the model holds float64 centroids)."""
        self._require_fitted()
        return self._centroids32

    @property
    def exact_centroids(self) -> np.ndarray:
        """The centroids in the precision they were fitted / loaded with (float32 or float64): they define labels."""
        return self._require_fitted()

    @property
    def k(self) -> int:
        return int(self._require_fitted().shape[0])

    @property
    def dim(self) -> int:
        return int(self._require_fitted().shape[1])

    def __repr__(self) -> str:
        if self._centroids is None:
            return f"KMeans(k={self.config.k}, backend={self.config.backend!r}, unfitted)"
        return f"KMeans(k={self.k}, dim={self.dim}, dtype={self._centroids.dtype}, backend=" \
               f"{self.metadata.get('backend', self.config.backend)!r})"

    # -- fit / predict --------------------------------------------------------------------------------------------

    def fit(self, features: Any, *, metadata: dict[str, Any] | None = None) -> KMeans:
        """Fit on float32 features ``[N, D]`` (float64 is cast; N >= k). `metadata` (encoder identity, layer, ...)
        is stored with the model; computed keys (k, dim, backend, inertia, n_features, seed, config...) win."""
        cfg = self.config
        x = _as_float_matrix(features, "features")
        if x.shape[0] < cfg.k:
            raise ValueError(f"k-means with k={cfg.k} needs at least {cfg.k} feature rows, got {x.shape[0]}")
        x = np.ascontiguousarray(x, dtype=np.float32)
        if not np.isfinite(x).all():
            raise ValueError("features contain NaN or Inf")
        if metadata is not None:
            json.dumps(metadata)  # fail now, not at save()
        start = time.perf_counter()
        centroids, info = BACKENDS[cfg.backend](x, cfg)
        seconds = time.perf_counter() - start
        self._set_centroids(centroids)
        computed = {
            "k": int(centroids.shape[0]), "dim": int(centroids.shape[1]), "backend": cfg.backend,
            "inertia": self.inertia(x), "n_features": int(x.shape[0]), "seed": cfg.seed, "init": cfg.init,
            "max_iter": cfg.max_iter, "config": dataclasses.asdict(cfg), "fit_info": info,
            "fit_seconds": round(seconds, 3), "versions": _versions(),
        }
        self.metadata = {**(metadata or {}), **computed}
        return self

    def predict(self, features: Any, *, device: Any = None, chunk_size: int | None = None) -> Any:
        """int64 labels ``[N]`` (`kernels.assign`, exact; numpy in -> numpy out, tensor in -> tensor out)."""
        return kernels.assign(features, self.codebook, device=device, chunk_size=chunk_size)

    def inertia(self, features: Any, *, chunk_size: int = 65536) -> float:
        """Mean squared distance of the rows of `features` to their assigned centroid (float64)."""
        x = features if isinstance(features, torch.Tensor) else torch.from_numpy(_as_float_matrix(features, "features"))
        if x.ndim != 2 or x.shape[0] == 0:
            raise ValueError(f"features must be a non-empty 2-D [N, D] array, got shape {tuple(x.shape)}")
        labels = torch.as_tensor(self.predict(x), device=x.device)
        c = torch.from_numpy(self.exact_centroids).to(device=x.device, dtype=torch.float64)
        total = 0.0
        for lo in range(0, x.shape[0], chunk_size):
            diff = x[lo:lo + chunk_size].double() - c[labels[lo:lo + chunk_size]]
            total += float((diff * diff).sum())
        return total / x.shape[0]

    # -- files ---------------------------------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write ``centroids`` (in their own dtype) + JSON-encoded metadata as safetensors, atomically."""
        from safetensors.numpy import save_file

        centroids = self._require_fitted()
        path = Path(path)
        meta = {str(key): json.dumps(value) for key, value in self.metadata.items()}
        meta.update({key: json.dumps(value) for key, value in KMEANS.header().items()})
        with atomic_path(path) as tmp:
            save_file({CENTROIDS_KEY: centroids}, str(tmp), metadata=meta)
        return path

    @classmethod
    def load(cls, path: str | Path, *, trust_pickle: bool = False) -> KMeans:
        """Load a ``.safetensors`` model (or a ``.npy`` ``[K, D]`` array); a joblib/pickle ``km.bin`` only with
        ``trust_pickle=True`` (otherwise `FormatError` with the conversion command). Centroids keep their dtype."""
        path = Path(path)
        if not path.is_file():
            raise FormatError(path, "no such file")
        with open(path, "rb") as f:
            head = f.read(16)
        if _is_safetensors(head, path):
            return cls._load_safetensors(path)
        if head.startswith(_NPY_MAGIC):
            try:
                arr = np.load(path, allow_pickle=False)
            except (ValueError, OSError, EOFError) as e:
                raise FormatError(path, f"not a valid .npy file ({e})") from None
            model = cls.from_centroids(_check_centroids(path, arr), {"source": "npy", "source_file": path.name})
            return model
        if not trust_pickle:
            if head.startswith(_PICKLE_MAGICS):
                raise FormatError(path, "looks like a pickle (a joblib km.bin of a scikit-learn model); loading a "
                                        "pickle can run arbitrary code, so it is refused; " + _conversion_hint(path))
            raise FormatError(path, "not a k-means file (expected .safetensors with a 'centroids' tensor, a .npy "
                                    "[K, D] array, or - with trust_pickle=True - a joblib km.bin)")
        model = load_sklearn_pickle(path, trust_pickle=trust_pickle)
        centers = _check_centroids(path, model.cluster_centers_)
        meta = {"backend": "sklearn", "source": "sklearn-pickle", "source_file": path.name,
                "sklearn_class": f"{type(model).__module__}.{type(model).__qualname__}",
                "sklearn_version": getattr(model, "_sklearn_version", None), "centroids_dtype": str(centers.dtype)}
        return cls.from_centroids(centers, meta, backend="sklearn")

    @classmethod
    def _load_safetensors(cls, path: Path) -> KMeans:
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="numpy") as f:
                keys = list(f.keys())
                raw_meta = f.metadata() or {}
                if CENTROIDS_KEY not in keys:
                    raise FormatError(path, f"no '{CENTROIDS_KEY}' tensor (found: {', '.join(keys) or 'none'})")
                centers = f.get_tensor(CENTROIDS_KEY)
        except (SafetensorError, OSError, ValueError, TypeError) as e:
            raise FormatError(path, f"not a readable safetensors file ({e})") from None
        centers = _check_centroids(path, centers)
        meta: dict[str, Any] = {}
        for key, value in raw_meta.items():
            try:
                meta[key] = json.loads(value)
            except (json.JSONDecodeError, TypeError):
                meta[key] = value  # written by another tool: keep the raw string
        header = {key: meta.pop(key) for key in ("format", "version", "format_version") if key in meta}
        if "format" in header:  # centroids written by another tool carry no header
            KMEANS.check(header, path)
        backend = meta.get("backend") if meta.get("backend") in BACKENDS else KMeansConfig.backend
        return cls.from_centroids(centers, meta, backend=backend)


def _is_safetensors(head: bytes, path: Path) -> bool:
    """safetensors = 8-byte little-endian header length, then a JSON object."""
    if len(head) >= 9 and head[8:9] == b"{":
        n = int.from_bytes(head[:8], "little")
        return 0 < n <= max(0, path.stat().st_size - 8)
    return False

