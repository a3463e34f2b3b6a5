"""Make legacy (pre-engine) checkpoints with the code at commit dcb70e7: an LM and a vocoder, each trained 4 steps
with checkpoints at 2 and 4; keeps checkpoint 2 and the 4-step histories."""
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, "tests")
import test_lm_train as tl
import test_vocoder_train as tv

out = Path(sys.argv[1]); out.mkdir(parents=True, exist_ok=True)
torch.set_num_threads(1)
# ---------------- LM
root = Path("/tmp/legacy/data"); shutil.rmtree(root, ignore_errors=True); root.mkdir(parents=True)
lm_train = tl.make_units(root / "lm_train", 150, seed=1); lm_valid = tl.make_units(root / "lm_valid", 20, seed=2)
cfg = tl.config((lm_train, lm_valid), root / "lm_run", max_steps=4, save_every=2, eval_every=2)
res = tl.train(cfg, log=lambda m: None)
shutil.copytree(root / "lm_run" / "checkpoints" / "step-0000002", out / "lm" / "step-0000002")
(out / "lm" / "reference.json").write_text(json.dumps({"losses": res.losses, "valid_losses": res.valid_losses,
    "config": {k: v for k, v in cfg.__dict__.items() if k not in ("train_dataset", "valid_dataset", "output_dir")}}, indent=1))
# ---------------- vocoder
rng = np.random.default_rng(0)
train = {f"u{i:02d}": (tv.random_frames(rng, int(rng.integers(80, 200))), ["bob", "alice"][i % 2], 0) for i in range(8)}
valid = {f"v{i:02d}": (tv.random_frames(rng, int(rng.integers(80, 200))), ["bob", "alice"][i % 2], 0) for i in range(3)}
corpus = tv.write_corpus(root / "voc_train", train), tv.write_corpus(root / "voc_valid", valid)
vcfg = tv.config(corpus, root / "voc_run", max_steps=4, save_every=2, eval_every=2)
vres = tv.train_vocoder(vcfg, log=lambda m: None)
shutil.copytree(root / "voc_run" / "checkpoints" / "step-0000002", out / "vocoder" / "step-0000002")
(out / "vocoder" / "reference.json").write_text(json.dumps({"history": vres.history, "valid_history": vres.valid_history}, indent=1))
print("ok", res.losses, vres.history)
