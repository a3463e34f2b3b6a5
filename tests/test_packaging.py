"""textless as users get it: a wheel built from the repository, installed into a fresh virtual environment and run
from another directory, finds its recipes, its bundled data and its starter pipeline."""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

from textless.config import RECIPES_DIR, recipe_names

REPO = Path(__file__).resolve().parents[1]


def test_recipes_ship_inside_the_package():
    assert RECIPES_DIR.parent == REPO / "textless"
    assert {"twist", "gslm", "lm_tiny", "train-vocoder", "vocoder_small", "kmeans/whisper_base_l4_k100"} <= \
        set(recipe_names())
    pyproject = (REPO / "pyproject.toml").read_text()
    assert '"recipes/**/*.yaml"' in pyproject  # package data: a wheel carries them


@pytest.mark.slow
def test_a_wheel_in_a_fresh_venv_trains_lm_tiny_from_another_directory(tmp_path):
    # built from a copy: setuptools writes build/ and *.egg-info into the source tree, so two copies of the suite
    # building from the repository at once would race on them
    source = tmp_path / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "outputs", "*.egg-info", "__pycache__", ".pytest_cache", ".ruff_cache"))
    dist = tmp_path / "dist"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(dist), str(source)],
                           capture_output=True, text=True, timeout=600, check=False)
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = dist.glob("textless-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    subprocess.run([venv / "bin" / "pip", "install", "--quiet", "--no-deps", "--no-index", str(wheel)], check=True,
                   capture_output=True, timeout=300)
    # the dependencies (torch, transformers, ...) come from this environment: a .pth line adds its site-packages
    # AFTER the fresh one, without running its .pth files (so an editable textless there is not seen)
    fresh_site = next((venv / "lib").glob("python3.*/site-packages"))
    (fresh_site / "deps.pth").write_text(site.getsitepackages()[0] + "\n")
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TEXTLESS_CACHE")}
    where = subprocess.run([venv / "bin" / "python", "-c", "import textless; print(textless.__file__)"], cwd=workdir,
                           env=env, check=True, capture_output=True, text=True, timeout=120).stdout.strip()
    assert where.startswith(str(fresh_site))
    run = subprocess.run([venv / "bin" / "textless", "train", "--config", "lm_tiny", "max_steps=3", "eval_every=3",
                          "save_every=3", "log_every=1", "progress=false", "tensorboard=false"],
                         cwd=workdir, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "step 3/3 loss" in run.stdout and "step 3 valid loss" in run.stdout
    assert (workdir / "outputs" / "lm_tiny" / "final" / "config.json").is_file()
