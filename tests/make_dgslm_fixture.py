"""Regenerate the tiny fairseq SpeechDLM (dGSLM) fixture in tests/data/dgslm/.

This is NOT a test and must not import fairseq at module import time: it is a
one-off generator that was run in a throwaway virtual environment with REAL
fairseq, so that textless can check its fairseq importer for numeric parity
without depending on fairseq.

Environment it was run in (2-core CPU machine, no GPU):

    python3.11 -m venv /tmp/fsenv                       # CPython 3.11.7
    /tmp/fsenv/bin/pip install torch==2.13.0+cpu      # local CPU wheel
    /tmp/fsenv/bin/pip install "numpy<2" cffi cython hydra-core==1.3.2 \
        omegaconf==2.3.0 regex sacrebleu tqdm bitarray packaging setuptools \
        wheel scikit-learn
    # fairseq-fixed 0.12.3.1 from PyPI: a maintained repackaging of fairseq
    # main (fairseq==0.12.2 on PyPI predates fairseq/models/speech_dlm/).
    # --no-deps because it pins torchaudio, which is not needed here.
    pip download fairseq-fixed==0.12.3.1 --no-deps && tar xzf fairseq_fixed-0.12.3.1.tar.gz
    cd fairseq_fixed-0.12.3.1 && /tmp/fsenv/bin/pip install --no-deps --no-build-isolation .
    cd /work/main && /tmp/fsenv/bin/python tests/make_dgslm_fixture.py

Resolved versions: torch 2.13.0+cpu, numpy 1.26.4, omegaconf 2.3.0,
hydra-core 1.3.2, fairseq-fixed 0.12.3.1 (fairseq.__version__ == "0.12.3.1").
No source patches to fairseq were needed.

What it does (all model code is fairseq's own):
  1. writes dict.unitA.txt / dict.unitB.txt (fairseq Dictionary.save format;
     20 unit symbols "0".."19" added in a SHUFFLED order so that dictionary
     index != unit id + 4);
  2. parses a fairseq-train command line (task speech_dlm_task, arch
     speech_dlm, criterion speech_dlm_criterion) and converts it to the hydra
     FairseqConfig exactly like fairseq_cli/train.py;
  3. builds task / model / criterion through fairseq's registries
     (tasks.setup_task, task.build_model, task.build_criterion);
  4. perturbs every parameter with seeded noise (LayerNorm weights start at 1,
     biases at 0, so a wrong mapping would otherwise go unnoticed);
  5. saves checkpoint_cfg.pt with fairseq's own Trainer.save_checkpoint
     (Trainer.state_dict + checkpoint_utils.torch_persistent_save);
  6. saves checkpoint_released_style.pt: the same state, but cfg.criterion
     replaced by the criterion section of the released dGSLM checkpoint
     (fairseq issue #5041; criterion 'duration_cross_multichannel_cross_entropy'
     which does not exist in fairseq);
  7. reloads checkpoint_cfg.pt with checkpoint_utils.load_model_ensemble_and_task
     and runs the reference forward (eval mode) and an incremental decode of
     sample 0; stores everything in reference_forward.npz.
"""

import os
import random
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
OUT_DIR = os.path.join(HERE, "data", "dgslm")

SEED = 1234
N_UNITS = 20
CHANNELS = ["unitA", "unitB"]
B, T = 3, 12


def shuffled_units():
    order = list(range(N_UNITS))
    random.Random(SEED).shuffle(order)
    return [str(u) for u in order]


def write_dicts(out_dir):
    from fairseq.data import Dictionary

    d = Dictionary()  # <s>=0, <pad>=1, </s>=2, <unk>=3
    for rank, sym in enumerate(shuffled_units()):
        d.add_symbol(sym, n=1000 - 10 * rank)
    assert (d.bos(), d.pad(), d.eos(), d.unk()) == (0, 1, 2, 3)
    assert len(d) == 24
    for ch in CHANNELS:
        d.save(os.path.join(out_dir, f"dict.{ch}.txt"))
    return d


def build_cfg(data_dir):
    from fairseq import options
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    argv = [
        data_dir,
        "--task",
        "speech_dlm_task",
        "--channels",
        ",".join(CHANNELS),
        "--next-unit-prediction",
        "False",
        "--edge-unit-prediction",
        "True",
        "--duration-prediction",
        "True",
        "--delayed-duration-target",
        "True",
        "--tokens-per-sample",
        "64",
        "--max-target-positions",
        "64",
        "--arch",
        "speech_dlm",
        "--decoder-embed-dim",
        "32",
        # SpeechDLMConfig defaults decoder_{input,output}_dim to 512 (not to
        # decoder_embed_dim), which would add project_in_dim/project_out_dim;
        # pin them to the embed dim like the released dGSLM (1024/1024/1024).
        "--decoder-input-dim",
        "32",
        "--decoder-output-dim",
        "32",
        "--decoder-ffn-embed-dim",
        "64",
        "--decoder-layers",
        "3",
        "--decoder-cross-layers",
        "2",
        "--decoder-attention-heads",
        "4",
        "--decoder-normalize-before",
        "--share-decoder-input-output-embed",
        "--dropout",
        "0.0",
        "--attention-dropout",
        "0.0",
        "--activation-dropout",
        "0.0",
        "--criterion",
        "speech_dlm_criterion",
        "--main-and-cross-weights",
        "1,0",
        "--general-unit-loss-weight",
        "0",
        "--edge-unit-loss-weight",
        "1",
        "--duration-loss-weight",
        "1",
        "--optimizer",
        "adam",
        "--lr",
        "0.0005",
        "--lr-scheduler",
        "inverse_sqrt",
        "--warmup-updates",
        "10",
        "--max-tokens",
        "1024",
        "--cpu",
        "--seed",
        str(SEED),
        "--no-save-optimizer-state",
    ]
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, input_args=argv)
    return convert_namespace_to_omegaconf(args)


def perturb(model):
    import torch

    g = torch.Generator().manual_seed(SEED + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():  # shared tensors appear once
            if p.dim() == 1:  # LayerNorm weights/biases, linear biases
                p.add_(0.1 * torch.randn(p.shape, generator=g))
            else:
                p.add_(0.02 * torch.randn(p.shape, generator=g))


def make_inputs(d):
    import numpy as np

    rng = np.random.RandomState(SEED)
    toks = {}
    for ch in CHANNELS:
        x = rng.randint(4, len(d), size=(B, T)).astype(np.int64)
        x[:, 0] = d.eos()  # fairseq LM inputs start with </s>
        x[2, -3:] = d.pad()  # sample 2 right-padded in both channels
        toks[ch] = x
    return toks


def run_forward(model, toks):
    import numpy as np
    import torch

    out = {}
    with torch.no_grad():
        net_out, _ = model(src_tokens={ch: torch.from_numpy(toks[ch]) for ch in CHANNELS})
        for ch in CHANNELS:
            # main-channel prediction only (main_and_cross_weights "1,0")
            assert list(net_out[ch].keys()) == [ch]
            pred = net_out[ch][ch]
            out[f"logits_{ch}"] = pred["pred_token"].float().numpy()
            out[f"duration_{ch}"] = pred["pred_duration"].squeeze(-1).float().numpy()

        # incremental decoding of sample 0, one step at a time
        inc_state = [{} for _ in CHANNELS]
        steps = {ch: ([], []) for ch in CHANNELS}
        for t in range(T):
            prefix = {ch: torch.from_numpy(toks[ch][:1, : t + 1]) for ch in CHANNELS}
            o, _ = model.decoder(prefix, incremental_state=inc_state)
            for ch in CHANNELS:
                steps[ch][0].append(o[ch][ch]["pred_token"][0, -1].float().numpy())
                steps[ch][1].append(o[ch][ch]["pred_duration"][0, -1, 0].float().numpy())
        for ch in CHANNELS:
            out[f"incremental_logits_{ch}"] = np.stack(steps[ch][0])[None]
            out[f"incremental_duration_{ch}"] = np.stack(steps[ch][1])[None].astype(np.float32)
    return out


def main():
    import fairseq
    import numpy as np
    import torch
    from fairseq import checkpoint_utils, tasks
    from fairseq.trainer import Trainer

    os.makedirs(OUT_DIR, exist_ok=True)
    torch.manual_seed(SEED)
    np.random.seed(SEED)

    d = write_dicts(OUT_DIR)
    cfg = build_cfg(OUT_DIR)

    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    criterion = task.build_criterion(cfg.criterion)
    perturb(model)
    model.eval()

    # -- checkpoint written by fairseq's Trainer -------------------------------
    trainer = Trainer(cfg, task, model, criterion)
    ckpt_cfg = os.path.join(OUT_DIR, "checkpoint_cfg.pt")
    trainer.save_checkpoint(ckpt_cfg, {"train_iterator": {"epoch": 1}, "val_loss": None})

    # make the checkpoint location-independent: cfg.task.data is the absolute
    # path of the generating machine otherwise (fairseq's hub loader overrides
    # it with data_name_or_path anyway).
    state = torch.load(ckpt_cfg, map_location="cpu", weights_only=False)
    state["cfg"]["task"]["data"] = "."
    torch.save(state, ckpt_cfg)

    # -- released-style variant -----------------------------------------------
    released = dict(state)
    released["cfg"] = dict(state["cfg"])
    released["cfg"]["criterion"] = {
        "_name": "duration_cross_multichannel_cross_entropy",
        "sentence_avg": False,
        "main_and_cross_weights": "1,0",
        "include_edge_loss": True,
        "edge_loss_weight": 1.0,
        "general_loss_weight": 0.0,
        "normalize_edge_loss": True,
        "duration_loss_weight": 1.0,
        "shift_duration_target": True,
        "round_duration_prediction": False,
        "normalize_duration_loss": False,
    }
    torch.save(released, os.path.join(OUT_DIR, "checkpoint_released_style.pt"))

    # -- reference forward, from the checkpoint as fairseq reloads it ----------
    toks = make_inputs(d)
    ref_direct = run_forward(model, toks)
    models, _cfg, _task = checkpoint_utils.load_model_ensemble_and_task([ckpt_cfg], arg_overrides={"data": OUT_DIR})
    loaded = models[0].eval()
    ref = run_forward(loaded, toks)
    for k in ref:
        np.testing.assert_array_equal(ref[k], ref_direct[k])
    for ch in CHANNELS:
        np.testing.assert_allclose(ref[f"incremental_logits_{ch}"], ref[f"logits_{ch}"][:1], atol=1e-5)
        np.testing.assert_allclose(ref[f"incremental_duration_{ch}"], ref[f"duration_{ch}"][:1], atol=1e-5)

    np.savez(
        os.path.join(OUT_DIR, "reference_forward.npz"),
        **{f"tokens_{ch}": toks[ch] for ch in CHANNELS},
        **ref,
    )
    print("fairseq", fairseq.__version__, "torch", torch.__version__)
    print("python", sys.version.split()[0])
    for k, v in sorted(ref.items()):
        print(k, v.shape, v.dtype)
    for f in sorted(os.listdir(OUT_DIR)):
        print(f, os.path.getsize(os.path.join(OUT_DIR, f)))


if __name__ == "__main__":
    main()
