"""dGSLM cost: training frames/s and generation frames/s against a plain single-channel `UnitLM` of the same size.

    python -m benchmarks.dgslm                                   # CPU: "cpu" preset, writes dgslm_cpu.json
    python -m benchmarks.dgslm --device cuda --preset speech_dlm --context 2048 --batch 8

Same size: the dGSLM preset's width, depth, heads and FFN in an OPT `UnitLM` (fairseq's transformer LM: pre-LN,
ReLU FFN, tied embeddings; learned instead of sinusoidal positions), 500 units. Same frames: a dGSLM batch of B
conversations x 2 channels x T frames against a UnitLM batch of 2B sequences of T units (each channel as its own
sequence), so the ratio is the cost of the cross-channel attention (and of keeping the two towers in step).

* training: forward + backward + AdamW step, random units, `--steps` timed steps after `--warmup`; frames/s counts
  both channels (2 B T per step).
* generation: frames/s of the streaming `step()` (KV cache) for batch 1 and 16 conversations: a dGSLM step makes one
  frame of both channels; the UnitLM makes one token for each of 2B streams; `--new-frames` frames after a 50-frame
  prompt, greedy (sampling cost is the same for both).
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
from transformers import OPTConfig

from benchmarks.tokenize_kernels import RESULTS, machine_info, write_results
from textless.dialogue.dgslm import DGSLM, preset_config
from textless.lm.model import UnitLM
from textless.lm.vocab import UnitVocab

K = 500


def unit_lm_like(dgslm: DGSLM) -> UnitLM:
    c = dgslm.config
    config = OPTConfig(vocab_size=K + 4, hidden_size=c.d_model, ffn_dim=c.ffn, num_hidden_layers=c.layers,
                       num_attention_heads=c.heads, max_position_embeddings=c.max_positions,
                       do_layer_norm_before=True, word_embed_proj_dim=c.d_model, activation_function="relu",
                       dropout=c.dropout, attention_dropout=0.0, tie_word_embeddings=True)
    return UnitLM.from_scratch(config, UnitVocab.default(K))


def parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def time_training(step, steps: int, warmup: int) -> float:
    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def train_seconds(model: torch.nn.Module, make_loss, steps: int, warmup: int, device: str) -> float:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        make_loss().backward()
        optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()

    return time_training(step, steps, warmup)


@torch.no_grad()
def generation_seconds(step_fn, frames: int, device: str) -> float:
    start = time.perf_counter()
    for _ in range(frames):
        step_fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--context", type=int, default=256, help="frames per channel per training window")
    parser.add_argument("--batch", type=int, default=4, help="conversations per training step")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--new-frames", type=int, default=100)
    args = parser.parse_args(argv)
    device = args.device
    torch.manual_seed(0)
    dgslm = DGSLM(preset_config(args.preset, K)).to(device)
    lm = unit_lm_like(dgslm).to(device)
    b, t = args.batch, args.context
    units = torch.randint(0, K, (b, 2, t), device=device)
    dgslm_step = train_seconds(dgslm, lambda: dgslm(units).logits.float().logsumexp(-1).mean(), args.steps,
                               args.warmup, device)
    flat = units.reshape(2 * b, t)
    lm_step = train_seconds(lm, lambda: lm.model(input_ids=flat, labels=flat).loss, args.steps, args.warmup, device)
    frames = 2 * b * t
    results = {"training": {"dgslm_frames_per_s": round(frames / dgslm_step, 1),
                            "unit_lm_frames_per_s": round(frames / lm_step, 1),
                            "dgslm_cost_vs_unit_lm": round(dgslm_step / lm_step, 2)}, "generation": {}}
    dgslm.eval()
    lm.eval()
    for batch in (1, 16):
        prompt = torch.randint(0, K, (batch, 2, 50), device=device)
        with dgslm.streaming(batch):
            for i in range(50):
                out = dgslm.step(prompt[:, :, i])
            tokens = out.logits.argmax(-1)

            def dgslm_next() -> None:
                nonlocal tokens
                tokens = dgslm.step(tokens).logits.argmax(-1)

            d_seconds = generation_seconds(dgslm_next, args.new_frames, device)
        streams = prompt.reshape(2 * batch, 50)
        with lm.streaming(2 * batch):
            for i in range(50):
                logits = lm.step(streams[:, i])
            lm_tokens = logits.argmax(-1)

            def lm_next() -> None:
                nonlocal lm_tokens
                lm_tokens = lm.step(lm_tokens).argmax(-1)

            u_seconds = generation_seconds(lm_next, args.new_frames, device)
        results["generation"][f"batch_{batch}"] = {
            "dgslm_frames_per_s": round(batch * args.new_frames / d_seconds, 1),
            "unit_lm_frames_per_s": round(batch * args.new_frames / u_seconds, 1),
            "dgslm_cost_vs_unit_lm": round(d_seconds / u_seconds, 2)}
        print(f"generation batch {batch}: {results['generation'][f'batch_{batch}']}")
    print(f"training: {results['training']}")
    report = {"format": "textless.benchmarks.dgslm", "version": 1, "machine": machine_info(device),
              "preset": args.preset, "context_frames": t, "batch_conversations": b,
              "parameters": {"dgslm": parameters(dgslm), "unit_lm": parameters(lm)},
              "new_frames": args.new_frames, **results,
              "note": "frames count both channels in training; a generation frame is one frame of both channels "
                      "(the UnitLM runs one stream per channel)"}
    out = RESULTS / f"dgslm_{device.split(':')[0]}.json"
    write_results(out, report)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
