import os
import subprocess
import sys
from dataclasses import dataclass, field

import pytest

from textless.cli import COMMANDS, main
from textless.config import compose
from textless.errors import ConfigError


@dataclass
class Inner:
    k: int = 3


@dataclass
class Schema:
    lr: float = 1.0
    name: str = "x"
    inner: Inner = field(default_factory=Inner)


def test_compose_defaults_recipe_and_overrides(tmp_path):
    assert compose(Schema, "nothing_here", []) == Schema()
    recipe = tmp_path / "rec.yaml"
    recipe.write_text("lr: 0.5\ninner:\n  k: 7\n")
    assert compose(Schema, "x", [], str(recipe)) == Schema(lr=0.5, inner=Inner(k=7))
    # overrides win over the recipe, which wins over the defaults
    assert compose(Schema, "x", ["lr=2e-3", "name=y"], str(recipe)) == Schema(lr=2e-3, name="y", inner=Inner(k=7))


def test_recipe_may_use_hydra_config_groups(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "small.yaml").write_text("k: 1\n")
    (tmp_path / "model" / "big.yaml").write_text("k: 99\n")
    (tmp_path / "rec.yaml").write_text("defaults:\n  - model@inner: small\n  - _self_\nname: grouped\n")
    assert compose(Schema, "x", [], str(tmp_path / "rec.yaml")).inner.k == 1
    assert compose(Schema, "x", ["model@inner=big"], str(tmp_path / "rec.yaml")).inner.k == 99


@pytest.mark.parametrize("overrides, message", [
    (["lr=fast"], "invalid config for 'x'"),
    (["nope=1"], "nope"),
    (["lr"], "override 'lr' is not of the form key=value"),
])
def test_compose_errors_are_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        compose(Schema, "x", overrides)


def test_missing_recipe():
    with pytest.raises(ConfigError, match="recipe 'no_such_recipe' not found"):
        compose(Schema, "x", [], "no_such_recipe")


def test_demo_print_config_uses_experiments_recipe(capsys):
    assert main(["demo", "--print-config", "k=25", "splits=[valid]"]) == 0
    out = capsys.readouterr().out
    assert "k: 25" in out and "- valid" in out and "output_dir: outputs/demo" in out


def test_user_error_is_one_line_and_exit_2(capsys):
    assert main(["demo", "k=fast"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("textless: error: invalid config for 'demo'")


def test_debug_flag_shows_the_exception():
    with pytest.raises(ConfigError):
        main(["--debug", "demo", "k=fast"])


def test_info_on_missing_path(capsys, tmp_path):
    assert main(["info", str(tmp_path / "missing")]) == 2
    assert "not found" in capsys.readouterr().err


def test_console_script_help_lists_every_command():
    env = {**os.environ, "COLUMNS": "200"}
    out = subprocess.run([sys.executable, "-m", "textless.cli", "--help"], capture_output=True, text=True, check=True,
                         env=env)
    for name, command in COMMANDS.items():
        assert name in out.stdout and command.help in out.stdout


def test_units_import_export_round_trip_through_the_cli(tmp_path, capsys):
    km = tmp_path / "train.km"
    km.write_text("1 1 2 0\n3 3 3\n")
    (tmp_path / "train.tsv").write_text("/root\nspk/a.flac\t640\nspk/b.flac\t480\n")
    (tmp_path / "dict.km.txt").write_text("".join(f"{u} 1\n" for u in range(5)))
    out = tmp_path / "units"
    assert main(["units", "import", "fairseq_km", str(km), str(out), "--manifest", str(tmp_path / "train.tsv"),
                 "--dict", str(tmp_path / "dict.km.txt"), "--deduplicate"]) == 0
    assert main(["info", str(out)]) == 0
    info = capsys.readouterr().out
    assert "vocabulary 5" in info and "deduplicated" in info and "utterances" in info
    # exporting back gives the original frame-level file
    assert main(["units", "export", "fairseq_km", str(out), str(tmp_path / "back.km")]) == 0
    assert (tmp_path / "back.km").read_text() == km.read_text()
    # an existing output is refused unless --overwrite
    assert main(["units", "import", "fairseq_km", str(km), str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["units", "import", "fairseq_km", str(km), str(out), "--overwrite", "--encoding", "jsonl"]) == 0


def test_units_option_that_does_not_apply_to_the_format(tmp_path, capsys):
    (tmp_path / "u.txt").write_text("a|1 2 3\n")
    assert main(["units", "import", "gslm", str(tmp_path / "u.txt"), str(tmp_path / "o"), "--dict", "x"]) == 2
    assert "--dict does not apply to format 'gslm'" in capsys.readouterr().err


def test_manifest_command_writes_durations(tmp_path, capsys):
    import numpy as np
    import soundfile as sf

    (tmp_path / "wavs").mkdir()
    sf.write(tmp_path / "wavs" / "a.wav", np.zeros(8000, dtype=np.float32), 16000)
    assert main(["manifest", str(tmp_path / "wavs"), str(tmp_path / "m.tsv")]) == 0
    assert (tmp_path / "m.tsv").read_text().splitlines() == ["id\tpath\tduration", "a\twavs/a.wav\t0.5"]
    assert main(["info", str(tmp_path / "m.tsv")]) == 0
    assert "1 utterances" in capsys.readouterr().out


@dataclass
class NamedLikePackages:
    lm: str = ""
    data: str = ""


def test_fields_named_like_package_directories_compose_without_a_recipe():
    # without a recipe nothing is a Hydra config group, even names of textless sub-packages
    assert compose(NamedLikePackages, "no_recipe_here", ["lm=/x", "data=y"]) == NamedLikePackages("/x", "y")


def test_help_of_a_config_command_lists_its_keys_with_defaults_and_docs(capsys):
    with pytest.raises(SystemExit):
        main(["tokenize", "--help"])
    out = capsys.readouterr().out
    assert 'tokenizer="starter"       SpeechTokenizer bundle directory, or "starter"' in out
    assert "restart=False             discard a partial run" in out
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    assert "stop_at_eos=False" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # a doc continued on the next comment line is read whole
        main(["eval-resynth", "--help"])
    assert "(default: each item's own, else the pipeline's default voice)" in capsys.readouterr().out


def test_a_mistyped_key_gets_did_you_mean_before_torch_is_imported():
    """In a fresh interpreter: the typo is reported (exit 2) and torch, the slow import, was never loaded."""
    code = ("import sys; from textless.cli import main; rc = main(['tokenize', 'tokenizr=x']); "
            "print(rc, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert done.stdout.split() == ["2", "False"], done.stderr
    assert ("unknown key 'tokenizr' for 'tokenize'; did you mean 'tokenizer'? (`textless tokenize --help` lists the "
            "keys)") in done.stderr


def test_bad_weights_in_a_model_directory_are_one_line(tmp_path, capsys):
    """A torn or foreign weight file in an LM or vocoder directory: one line naming the file, not a traceback."""
    from textless.utils.assets import starter_part

    lm = tmp_path / "lm"
    lm.mkdir()
    for f in starter_part("starter", "lm").iterdir():
        (lm / f.name).write_bytes(f.read_bytes())
    (lm / "model.safetensors").unlink()
    (lm / "pytorch_model.bin").write_bytes(b"not a torch file")
    assert main(["generate", f"lm={lm}", "prompts=bundled:valid", "tokenizer=starter", f"output={tmp_path / 'g'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (f"textless: error: {lm}: cannot load the model's weights (pytorch_model.bin): "
                       f"UnpicklingError: Weights only load failed") and "Traceback" not in "\n".join(err)
    voc = tmp_path / "voc"
    voc.mkdir()
    for f in starter_part("starter", "vocoder").iterdir():
        (voc / f.name).write_bytes(f.read_bytes())
    (voc / "model.safetensors").write_bytes(b"junk")
    wav = tmp_path / "x.wav"
    assert main(["resynth", str(wav), str(tmp_path / "y.wav"), "--tokenizer", "starter", "--vocoder", str(voc)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"textless: error: {voc / 'model.safetensors'}: Error while deserializing header")
