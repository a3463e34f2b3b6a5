"""GPU checks (skipped without CUDA; run on a lent GPU machine with `bash benchmarks/gpu_check.sh`).

What only a GPU can show: encoder bf16/fp16 autocast stays close to fp32, vocoder batching is exact on CUDA kernels
too, unit-LM and vocoder training steps run in bf16 and match CPU fp32 closely at the first step, dedup and the torch
k-means backend on CUDA agree with the CPU, and flash attention (when installed) matches SDPA.
(Assignment-kernel parity on CUDA: tests/test_kernels.py::test_cuda_matches_cpu.)
"""

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _hubert():
    from transformers import HubertConfig, HubertModel

    torch.manual_seed(0)
    return HubertModel(HubertConfig(num_hidden_layers=4)).eval()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_ssl_encoder_half_autocast_on_cuda(dtype):  # pragma: no cover - GPU machines only
    from textless.tokenizers.encoders import SSLEncoder

    model = _hubert()
    wav = torch.randn(3, 32000) * 0.1
    lengths = torch.tensor([32000, 20000, 9000])
    reference, ref_lengths = SSLEncoder(model, 3)(wav, lengths)
    cuda32, lengths32 = SSLEncoder(model, 3).to("cuda")(wav, lengths)
    torch.testing.assert_close(cuda32.cpu(), reference, atol=2e-3, rtol=1e-3)
    half, _ = SSLEncoder(model, 3, dtype=dtype).to("cuda")(wav, lengths)
    assert half.dtype == torch.float32 and torch.equal(lengths32.cpu(), ref_lengths)
    err = (half.cpu() - reference).abs().max() / reference.abs().max()
    assert 0 < err < 0.05


def test_vocoder_batched_equals_one_by_one_on_cuda():  # pragma: no cover - GPU machines only
    from textless.vocoders import UnitHiFiGANConfig, UnitVocoder

    torch.manual_seed(0)
    voc = UnitVocoder.from_config(UnitHiFiGANConfig(num_embeddings=100, upsample_initial_channel=128,
                                                    duration_predictor=True), deduplicated=True).eval()
    rng = np.random.default_rng(0)
    seqs = [rng.integers(0, 100, n) for n in (40, 7, 120, 33)]
    durs = [rng.integers(1, 4, len(s)) for s in seqs]
    cpu = voc.synthesize(seqs, durs, batch_size=1)
    voc = voc.to("cuda")
    batched = voc.synthesize(seqs, durs, batch_size=4)
    for a, b, c in zip(batched, voc.synthesize(seqs, durs, batch_size=1), cpu):
        np.testing.assert_allclose(a, b, atol=1e-4)
        np.testing.assert_allclose(a, c, atol=1e-3)


def test_unit_lm_trains_in_bf16_on_cuda(tmp_path):  # pragma: no cover - GPU machines only
    from textless.data.units import UnitMeta, UnitSequence, write_units
    from textless.lm.train import TrainConfig, train

    rng = np.random.default_rng(0)
    meta = UnitMeta(tokenizer={"name": "gpu-check"}, frame_rate=50.0, vocab_size=50, deduplicated=False)
    units = write_units(tmp_path / "units", [UnitSequence(f"u{i}", rng.integers(0, 50, 80)) for i in range(64)],
                        meta, encoding="binary")
    results = {}
    for device_precision in ("bf16", "fp32"):
        cfg = TrainConfig(train_dataset=str(units), preset="small", output_dir=str(tmp_path / device_precision),
                          context_length=128, batch_size=8, max_steps=3, save_every=3, eval_every=10**9,
                          precision=device_precision, progress=False, tensorboard=False, lr=1e-4)
        results[device_precision] = train(cfg)
    bf16, fp32 = results["bf16"].losses, results["fp32"].losses
    assert all(np.isfinite(v) for _, v in bf16) and abs(bf16[0][1] - fp32[0][1]) < 0.05


def test_vocoder_trains_in_bf16_on_cuda(tmp_path):  # pragma: no cover - GPU machines only
    from textless.cli import main

    tok = tmp_path / "tok"
    assert main(["kmeans", "dataset=bundled:valid", "k=20", "backend=torch", "max_iter=5", f"output={tok}",
                 "progress=false"]) == 0
    assert main(["tokenize", "dataset=bundled:valid", f"tokenizer={tok}", f"output={tmp_path / 'u'}",
                 "progress=false"]) == 0
    assert main(["train-vocoder", f"train_dataset={tmp_path / 'u'}", f"output_dir={tmp_path / 'voc'}",
                 "preset=small", "max_steps=4", "mel_only_steps=2", "save_every=4", "eval_every=4",
                 "batch_size=4", "precision=bf16", "device=cuda", "progress=false"]) == 0
    assert (tmp_path / "voc" / "final" / "config.json").is_file()


@pytest.mark.parametrize("backend", ["flash_attention_2", "flash_attention_3"])
def test_unit_lm_flash_attention_matches_sdpa_on_cuda(backend):  # pragma: no cover - GPU machines only
    """A flash backend (when its package is installed) gives the SDPA logits, packed training contexts (restarting
    position ids) score like their utterances alone, and generation with the KV cache runs on it."""
    import importlib.util

    from textless.lm.generation import SamplingConfig, generate_units
    from textless.lm.model import UnitLM
    from textless.lm.vocab import UnitVocab

    package = {"flash_attention_2": "flash_attn", "flash_attention_3": "flash_attn_interface"}[backend]
    if importlib.util.find_spec(package) is None:
        pytest.skip(f"{package} is not installed")
    torch.manual_seed(0)
    lm = UnitLM.from_scratch("tiny", UnitVocab.default(50))
    with torch.no_grad():
        lm.model.to("cuda", torch.bfloat16)
        ids = torch.randint(3, 53, (2, 64), device="cuda")
        lm.model.config._attn_implementation = "sdpa"
        sdpa = lm.model(input_ids=ids).logits.float()
        lm.model.config._attn_implementation = backend
        flash = lm.model(input_ids=ids).logits.float()
        torch.testing.assert_close(flash, sdpa, atol=3e-2, rtol=3e-2)
        # two utterances packed into one row with restarting positions == each alone
        a, b = ids[0, :30], ids[1, :34]
        packed = lm.model(input_ids=torch.cat([a, b])[None],
                          position_ids=torch.cat([torch.arange(30), torch.arange(34)])[None].cuda()).logits.float()
        alone = lm.model(input_ids=b[None]).logits.float()
        torch.testing.assert_close(packed[0, 30:], alone[0], atol=3e-2, rtol=3e-2)
    out = generate_units(lm, [np.arange(10) % 50, np.arange(4) % 50],
                         SamplingConfig(temperature=0.0, max_new_tokens=20, min_new_tokens=20, seed=0))
    assert [len(o[0]) for o in out] == [20, 20] and all(((o[0] >= 0) & (o[0] < 50)).all() for o in out)


def test_dedup_and_torch_kmeans_on_cuda():  # pragma: no cover - GPU machines only
    """dedup_torch on a CUDA tensor == the numba kernel; the torch k-means backend on CUDA recovers separated blobs
    with the CPU run's inertia (k-means++ draws come from the same seeded numpy stream)."""
    from textless.tokenizers.kernels import dedup, dedup_torch
    from textless.tokenizers.kmeans import KMeans

    rng = np.random.default_rng(0)
    labels = np.repeat(rng.integers(0, 50, 20000), rng.integers(1, 6, 20000))
    units, durations = dedup_torch(torch.from_numpy(labels).cuda())
    assert units.device.type == "cuda"
    ref_units, ref_durations = dedup(labels)
    np.testing.assert_array_equal(units.cpu().numpy(), ref_units)
    np.testing.assert_array_equal(durations.cpu().numpy(), ref_durations)

    k, d = 8, 12
    centers = (rng.standard_normal((k, d)) * 10).astype(np.float32)
    truth = np.arange(4000) % k
    x = centers[truth] + rng.standard_normal((4000, d)).astype(np.float32)
    fits = {dev: KMeans(k=k, backend="torch", device=dev, seed=1).fit(x) for dev in ("cpu", "cuda")}
    table = np.zeros((k, k), np.int64)
    np.add.at(table, (truth, fits["cuda"].predict(x)), 1)
    assert ((table > 0).sum(0) == 1).all() and ((table > 0).sum(1) == 1).all()  # a permutation of the blobs
    assert fits["cuda"].metadata["inertia"] == pytest.approx(fits["cpu"].metadata["inertia"], rel=1e-4)
