"""Hydra composition for CLI commands: dataclass schema <- recipe YAML <- ``key=value`` overrides.

Every command declares a dataclass config (its schema and defaults). A recipe is a YAML file under ``experiments/``
(or any path given with ``--config``); it may use Hydra defaults lists and config groups. Overrides use Hydra's grammar
(``lr=1e-3``, ``+new.key=1``, ``group=option``). The result is validated against the schema: unknown keys and wrong
types are user errors with a one-line message.

Hydra treats every sub-directory of the recipe directory as a config group, so a schema field must not share its name
with one (``experiments/data/`` holds the corpus script: job configs say ``dataset``, not ``data``).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import is_dataclass
from pathlib import Path
from typing import TypeVar

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from textless.errors import ConfigError

T = TypeVar("T")


def experiments_dir() -> Path | None:
    """The recipe directory: ``$TEXTLESS_EXPERIMENTS``, else ``experiments/`` beside the package (a source checkout)."""
    env = os.environ.get("TEXTLESS_EXPERIMENTS")
    if env:
        return Path(env)
    candidate = Path(__file__).resolve().parents[1] / "experiments"
    return candidate if candidate.is_dir() else None


def _resolve_recipe(recipe: str | None, default_name: str) -> Path | None:
    """A recipe path from ``--config`` (a YAML path or a name under experiments/), or the command's default recipe."""
    root = experiments_dir()
    if recipe is None:
        default = root / f"{default_name}.yaml" if root else None
        return default if default is not None and default.exists() else None
    path = Path(recipe)
    if path.suffix in (".yaml", ".yml") and path.exists():
        return path.resolve()
    if root is not None and (root / f"{recipe}.yaml").exists():
        return (root / f"{recipe}.yaml").resolve()
    raise ConfigError(f"recipe '{recipe}' not found (give a .yaml path or a name under {root or 'experiments/'})")


def compose(schema: type[T], command: str, overrides: list[str] | None = None, recipe: str | None = None) -> T:
    """Compose the config of `command` and return it as an instance of the dataclass `schema`.

    The primary config is built in Hydra's ConfigStore with the defaults list ``[schema, recipe, _self_]``, so the
    recipe overrides the schema defaults and the command-line overrides win over both.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.config_store import ConfigStore
    from hydra.errors import HydraException

    assert is_dataclass(schema), schema
    overrides = list(overrides or [])
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key=value")
    path = _resolve_recipe(recipe, command)
    store = ConfigStore.instance()
    store.store(group="_textless_schema", name=command, node=schema, package="_global_")
    defaults: list = [{"_textless_schema": command}] + ([path.stem] if path else []) + ["_self_"]
    store.store(name=f"_textless_{command}", node={"defaults": defaults})
    try:
        # without a recipe, Hydra searches an empty directory, so no field name is taken for a config group
        with tempfile.TemporaryDirectory() as empty, \
                initialize_config_dir(config_dir=str(path.parent if path else empty), version_base=None):
            composed = hydra_compose(config_name=f"_textless_{command}", overrides=overrides)
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), composed))  # type: ignore[return-value]
    except (HydraException, OmegaConfBaseException) as e:
        reasons = [str(x).strip().splitlines()[0] for x in (e, e.__cause__) if x is not None and str(x).strip()]
        where = f" (recipe {path})" if path else ""
        raise ConfigError(f"invalid config for '{command}'{where}: {'; '.join(reasons) or type(e).__name__}") from e


def to_yaml(config) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(config))
