"""A training run killed with SIGKILL right after a given checkpoint, in a fresh process (exact-resume tests)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]

_KILLED_RUN = textwrap.dedent("""
    import importlib, json, sys, time, torch
    from textless.training.engine import TrainHooks
    torch.set_num_threads(int(sys.argv[2]))
    def load(spec):
        module, name = spec.split(":")
        return getattr(importlib.import_module(module), name)
    class Stall(TrainHooks):
        def on_checkpoint(self, step, path):
            if step == int(sys.argv[3]):
                print("CHECKPOINTED", step, flush=True)
                time.sleep(600)  # the test kills us here with SIGKILL
    load(sys.argv[5])(load(sys.argv[4])(**json.loads(sys.argv[1])), hooks=Stall())
""")


def kill_after_checkpoint(config, step: int, entry: str, log: Path) -> int:
    """Run ``entry(type(config)(**fields), hooks=...)`` (`entry`: "module:function") in a new process, SIGKILL it
    as soon as the checkpoint at `step` is complete, and return its exit code (its stderr goes to `log`)."""
    config_spec = f"{type(config).__module__}:{type(config).__qualname__}"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-c", _KILLED_RUN, json.dumps(config.__dict__),
                                 str(torch.get_num_threads()), str(step), config_spec, entry],
                                stdout=subprocess.PIPE, stderr=err, text=True, env=env, cwd=REPO)
    try:
        line = proc.stdout.readline()  # blocks until the checkpoint at `step` is complete (or the run died)
        assert line.strip() == f"CHECKPOINTED {step}", log.read_text()[-3000:]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        proc.stdout.close()
    return proc.returncode
