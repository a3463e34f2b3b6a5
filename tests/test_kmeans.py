"""k-means fitting backends, the safetensors centroid format, and the guarded loading of sklearn km.bin pickles."""

from __future__ import annotations

import json
import sys

import joblib
import numpy as np
import pytest
import torch
from safetensors.numpy import save_file
from sklearn.cluster import MiniBatchKMeans

from textless.errors import ConfigError, FormatError, TextlessError
from textless.tokenizers.kernels import brute_force_assign
from textless.tokenizers.kmeans import BACKENDS, KMeans, KMeansConfig, convert_pickle, load_sklearn_pickle


def _blobs(k=8, d=12, n=2400, seed=0):
    rng = np.random.default_rng(seed)
    centers = (rng.standard_normal((k, d)) * 10).astype(np.float32)
    truth = np.arange(n) % k
    x = centers[truth] + rng.standard_normal((n, d)).astype(np.float32)
    return x, truth, centers


def _is_permutation_of(labels, truth, k):
    table = np.zeros((k, k), dtype=np.int64)
    np.add.at(table, (truth, labels), 1)
    return bool(((table > 0).sum(0) == 1).all() and ((table > 0).sum(1) == 1).all())


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_backends_recover_separated_blobs(backend):
    x, truth, centers = _blobs()
    model = KMeans(k=8, backend=backend, n_init=2, seed=1).fit(x, metadata={"encoder": "hubert-base", "layer": 6})
    labels = model.predict(x)
    assert _is_permutation_of(labels, truth, 8)
    optimum = float(((x.astype(np.float64) - centers[truth]) ** 2).sum(1).mean())
    assert model.metadata["inertia"] == pytest.approx(model.inertia(x))
    assert model.metadata["inertia"] <= optimum * 1.001  # the fitted centroids are the blob means: <= true centers
    assert model.centroids.dtype == np.float32 and model.centroids.shape == (8, 12)
    meta = model.metadata
    assert (meta["k"], meta["dim"], meta["backend"], meta["n_features"], meta["seed"]) == (8, 12, backend, 2400, 1)
    assert meta["encoder"] == "hubert-base" and meta["layer"] == 6 and meta["config"]["backend"] == backend


def test_torch_backend_is_deterministic_and_reseeds_empty_clusters():
    x, _, _ = _blobs(k=5, n=500, seed=3)
    a = KMeans(k=5, backend="torch", seed=7).fit(x).centroids
    b = KMeans(k=5, backend="torch", seed=7).fit(x).centroids
    np.testing.assert_array_equal(a, b)
    # random init on many duplicate points: empty clusters appear and must be re-seeded, not left as NaN
    dup = np.repeat(np.eye(4, 6, dtype=np.float32) * 5, 50, axis=0)
    dup = np.concatenate([dup, np.random.default_rng(0).standard_normal((20, 6)).astype(np.float32)])
    model = KMeans(k=10, backend="torch", init="random", seed=0).fit(dup)
    assert np.isfinite(model.centroids).all()
    assert len(np.unique(model.predict(dup))) >= 5


def test_inertia_is_mean_squared_distance():
    x, _, _ = _blobs(n=400)
    model = KMeans.from_centroids(x[:8].astype(np.float64))
    labels = brute_force_assign(x, x[:8])
    expected = ((x.astype(np.float64) - x[:8].astype(np.float64)[labels]) ** 2).sum(1).mean()
    assert model.inertia(x) == pytest.approx(expected, rel=1e-12)
    assert model.inertia(torch.from_numpy(x)) == pytest.approx(expected, rel=1e-12)


def test_save_load_round_trip(tmp_path):
    x, _, _ = _blobs()
    model = KMeans(k=8, backend="torch").fit(x, metadata={"encoder": {"name": "mhubert", "rate": 25}, "layer": 11})
    path = model.save(tmp_path / "km8.safetensors")
    assert [p.name for p in tmp_path.iterdir()] == ["km8.safetensors"]  # atomic: no temporary left
    loaded = KMeans.load(path)
    assert loaded.metadata == model.metadata
    assert loaded.exact_centroids.dtype == np.float32
    np.testing.assert_array_equal(loaded.exact_centroids, model.exact_centroids)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        raw = f.metadata()
    assert json.loads(raw["format"]) == "textless.kmeans" and json.loads(raw["layer"]) == 11
    # files of textless <= 0.1 (format "textless-kmeans", key "format_version") still read
    old = {**raw, "format": json.dumps("textless-kmeans"), "format_version": json.dumps(1)}
    del old["version"]
    save_file({"centroids": model.centroids}, str(path.with_name("old.safetensors")), metadata=old)
    assert KMeans.load(path.with_name("old.safetensors")).metadata == model.metadata


def _fitted_sklearn(x):
    return MiniBatchKMeans(n_clusters=6, n_init=1, batch_size=256, max_iter=5, random_state=0).fit(x)


def test_km_bin_is_refused_without_trust(tmp_path):
    x, _, _ = _blobs(k=6, n=600)
    path = tmp_path / "km.bin"
    joblib.dump(_fitted_sklearn(x.astype(np.float64)), path)
    with pytest.raises(TextlessError) as err:
        KMeans.load(path)
    message = str(err.value)
    assert "trust_pickle=True" in message and ".save('km.safetensors')" in message
    assert f"textless kmeans init_from={path} trust_pickle=true" in message
    compressed = tmp_path / "km_z.bin"
    joblib.dump(_fitted_sklearn(x.astype(np.float64)), compressed, compress=3)
    with pytest.raises(FormatError, match="pickle"):
        KMeans.load(compressed)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_trusted_km_bin_predicts_like_sklearn(tmp_path, dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3000, 16)).astype(dtype)
    sk = _fitted_sklearn(x)
    assert sk.cluster_centers_.dtype == dtype
    joblib.dump(sk, tmp_path / "km.bin")
    model = KMeans.load(tmp_path / "km.bin", trust_pickle=True)
    assert model.exact_centroids.dtype == dtype  # float64 km.bin centroids are kept for the exact labels
    assert model.centroids.dtype == np.float32
    expected = sk.predict(x)
    np.testing.assert_array_equal(model.predict(x), expected)
    np.testing.assert_array_equal(model.predict(x.astype(np.float32)), brute_force_assign(x.astype(np.float32),
                                                                                          sk.cluster_centers_))
    assert model.metadata["source"] == "sklearn-pickle" and model.metadata["k"] == 6
    # converted once, the safe file keeps the dtype and the labels
    with pytest.raises(FormatError, match="arbitrary code"):  # no conversion without the caller's opt-in
        convert_pickle(tmp_path / "km.bin", tmp_path / "km6.safetensors")
    assert not (tmp_path / "km6.safetensors").exists()
    out = convert_pickle(tmp_path / "km.bin", tmp_path / "km6.safetensors", trust_pickle=True)
    again = KMeans.load(out)
    assert again.exact_centroids.dtype == dtype
    np.testing.assert_array_equal(again.predict(x), expected)


def test_pickle_of_something_else_is_a_clear_error(tmp_path):
    joblib.dump({"cluster_centres": [1, 2]}, tmp_path / "not_km.bin")
    with pytest.raises(FormatError, match="holds a builtins.dict, not a scikit-learn k-means model"):
        KMeans.load(tmp_path / "not_km.bin", trust_pickle=True)
    (tmp_path / "broken.bin").write_bytes(b"\x80\x04garbage")
    with pytest.raises(FormatError, match="cannot unpickle"):
        KMeans.load(tmp_path / "broken.bin", trust_pickle=True)


def test_old_sklearn_pickles(tmp_path, monkeypatch):
    """Pickles from old sklearn: no `_n_threads`, and (< 0.24) the class lives in `sklearn.cluster.k_means_`."""
    x = np.random.default_rng(1).standard_normal((500, 4))
    sk = _fitted_sklearn(x)
    expected = sk.predict(x)
    del sk._n_threads
    import sklearn.cluster._kmeans as current

    monkeypatch.setitem(sys.modules, "sklearn.cluster.k_means_", current)
    monkeypatch.setattr(MiniBatchKMeans, "__module__", "sklearn.cluster.k_means_")
    joblib.dump(sk, tmp_path / "old.bin")
    monkeypatch.undo()
    assert b"sklearn.cluster.k_means_" in (tmp_path / "old.bin").read_bytes()
    assert "sklearn.cluster.k_means_" not in sys.modules
    with pytest.raises(FormatError, match="trust_pickle=True"):
        load_sklearn_pickle(tmp_path / "old.bin")
    model = load_sklearn_pickle(tmp_path / "old.bin", trust_pickle=True)
    assert "sklearn.cluster.k_means_" not in sys.modules
    np.testing.assert_array_equal(model.predict(x), expected)  # works thanks to the patched _n_threads
    np.testing.assert_array_equal(KMeans.load(tmp_path / "old.bin", trust_pickle=True).predict(x), expected)


def test_other_files(tmp_path):
    c = np.random.default_rng(2).standard_normal((5, 3))
    np.save(tmp_path / "c.npy", c)
    assert KMeans.load(tmp_path / "c.npy").exact_centroids.dtype == np.float64
    (tmp_path / "junk.bin").write_bytes(b"hello world, not a model")
    with pytest.raises(FormatError, match="not a k-means file"):
        KMeans.load(tmp_path / "junk.bin")
    save_file({"weights": c}, str(tmp_path / "other.safetensors"))
    with pytest.raises(FormatError, match="no 'centroids' tensor"):
        KMeans.load(tmp_path / "other.safetensors")
    save_file({"centroids": np.full((2, 2), np.nan)}, str(tmp_path / "nan.safetensors"))
    with pytest.raises(FormatError, match="NaN"):
        KMeans.load(tmp_path / "nan.safetensors")
    with pytest.raises(FormatError, match="no such file"):
        KMeans.load(tmp_path / "missing.safetensors")


def test_config():
    assert KMeansConfig() == KMeansConfig(k=500, backend="faiss", max_iter=100, seed=0, init="k-means++",
                                          batch_size=10000, n_init=20, max_no_improvement=100, init_size=None,
                                          reassignment_ratio=0.0, tol=0.0, device="cpu")
    assert KMeans(KMeansConfig(k=3), backend="torch").config.k == 3
    with pytest.raises(ConfigError, match="unknown k-means option"):
        KMeans(n_cluster=3)
    with pytest.raises(ConfigError, match="backend"):
        KMeans(backend="cuml")
    with pytest.raises(ConfigError, match="init"):
        KMeans(init="kmeans++")
    with pytest.raises(ConfigError, match="k"):
        KMeans(k=0)
    with pytest.raises(ValueError, match="at least 10"):
        KMeans(k=10).fit(np.zeros((5, 2), np.float32))
    with pytest.raises(RuntimeError, match="fit"):
        KMeans().predict(np.zeros((2, 2), np.float32))
    assert KMeansConfig(k=700).resolved_init_size(10**6) == 30000
    assert KMeansConfig(k=15000, batch_size=1000).resolved_init_size(10**6) == 45000
    assert KMeansConfig(init_size=50).resolved_init_size(40) == 40


def _fairseq_minibatch_kmeans(k, max_iter, batch_size, random_state):
    """fairseq's examples/hubert/simple_kmeans/learn_kmeans.py `get_km_model`, argument for argument."""
    return MiniBatchKMeans(n_clusters=k, init="k-means++", max_iter=max_iter, batch_size=batch_size, verbose=1,
                           compute_labels=False, tol=0.0, max_no_improvement=100, init_size=None, n_init=20,
                           reassignment_ratio=0.0, random_state=random_state)


@pytest.mark.parametrize(("seed", "overrides"), [(0, {}), (5, {}), (3, {"batch_size": 256, "max_iter": 3})])
def test_sklearn_backend_is_fairseq_recipe(seed, overrides, capsys):
    """backend="sklearn" gives exactly the centroids of fairseq's MiniBatchKMeans (no subsampling, same seed) on the
    float32 array textless hands to sklearn; with fairseq's defaults (batch_size 10000 > N: full batches) and with
    real mini-batches (batch_size 256 < N)."""
    rng = np.random.default_rng(42)
    x = rng.standard_normal((1500, 16)).astype(np.float32)
    config = KMeansConfig(backend="sklearn", k=12, seed=seed, **overrides)
    ours = KMeans(config).fit(x.astype(np.float64))  # textless casts features to float32 before sklearn sees them
    assert ours.exact_centroids.dtype == np.float32
    reference = _fairseq_minibatch_kmeans(12, config.max_iter, config.batch_size, seed).fit(x)
    assert reference.cluster_centers_.dtype == np.float32
    np.testing.assert_array_equal(ours.exact_centroids, reference.cluster_centers_)
    assert ours.metadata["fit_info"]["steps"] == reference.n_steps_
    # fairseq itself calls np.random.seed(seed) and passes no random_state: the same stream
    saved = np.random.get_state()
    try:
        np.random.seed(seed)
        global_rng = _fairseq_minibatch_kmeans(12, config.max_iter, config.batch_size, None).fit(x)
    finally:
        np.random.set_state(saved)
    np.testing.assert_array_equal(ours.exact_centroids, global_rng.cluster_centers_)
    # the comparison is sensitive to the seed: another seed gives other centroids
    other = KMeans(config, seed=seed + 1).fit(x)
    assert np.abs(other.exact_centroids - ours.exact_centroids).max() > 1e-3
    capsys.readouterr()  # verbose=1 output of the reference models
