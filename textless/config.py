"""Hydra composition for CLI commands: dataclass schema <- recipe YAML <- ``key=value`` overrides.

Every command declares a dataclass config (its schema and defaults). A recipe is a YAML file: a name of the recipes
that ship inside the package (``textless/recipes/<name>.yaml``, so an installed textless finds ``--config twist``)
or any path given with ``--config``; it may use Hydra defaults lists and config groups. A command without
``--config`` uses its own recipe, ``textless/recipes/<command>.yaml``, when there is one. Overrides use Hydra's
grammar (``lr=1e-3``, ``+new.key=1``, ``group=option``). The result is validated against the schema: unknown keys
and wrong types are user errors with a one-line message.

Hydra treats every sub-directory of the recipe directory as a config group, so a schema field must not share its name
with one (``textless/recipes/kmeans/`` holds the k-means presets: no job config has a ``kmeans`` field).
"""

from __future__ import annotations

import tempfile
from dataclasses import is_dataclass
from pathlib import Path
from typing import TypeVar

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from textless.errors import ConfigError
from textless.utils.registry import did_you_mean

T = TypeVar("T")
RECIPES_DIR = Path(__file__).resolve().parent / "recipes"


def recipe_names() -> list[str]:
    """The recipes that ship with textless (``kmeans/gslm_hubert_base_l6_k100`` for those in a sub-directory)."""
    return sorted(p.relative_to(RECIPES_DIR).with_suffix("").as_posix() for p in RECIPES_DIR.rglob("*.yaml"))


def _resolve_recipe(recipe: str | None, default_name: str) -> Path | None:
    """A recipe path from ``--config`` (a YAML path or a packaged recipe name), or the command's default recipe."""
    if recipe is None:
        default = RECIPES_DIR / f"{default_name}.yaml"
        return default if default.exists() else None
    path = Path(recipe)
    if path.suffix in (".yaml", ".yml") and path.exists():
        return path.resolve()
    if (RECIPES_DIR / f"{recipe}.yaml").exists():
        return (RECIPES_DIR / f"{recipe}.yaml").resolve()
    names = recipe_names()
    raise ConfigError(f"recipe '{recipe}' not found: give a .yaml path or the name of a recipe that ships with "
                      f"textless ({', '.join(names)}){did_you_mean(recipe, names)}")


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
