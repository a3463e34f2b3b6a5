"""What a command's config accepts, read from the source of its dataclass without importing it.

Job modules import torch and transformers (seconds). ``textless <command> --help`` and the check of ``key=value``
overrides only need the field names, defaults and one-line docs, which the dataclass source holds: this module parses
it (`ast`), following base classes through the module's imports, so both answer in a fraction of a second and a
mistyped key gets a "did you mean" before anything heavy is loaded.

A field's doc is the comment at the end of its line (continued on following comment-only lines), as the configs of
textless are written.
"""

from __future__ import annotations

import ast
import importlib.util
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from textless.errors import ConfigError
from textless.utils.registry import did_you_mean


@dataclass(frozen=True)
class Field:
    name: str
    annotation: str
    default: str      # the default's source text ("" when the field has none)
    doc: str          # the trailing comment(s)


def _module_file(module: str) -> Path:
    """The source file of a textless module, found without importing its packages (their __init__ may import
    torch); another module through importlib."""
    if module == "textless" or module.startswith("textless."):
        base = Path(__file__).resolve().parent.joinpath(*module.split(".")[1:])
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return candidate
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ConfigError(f"cannot find module {module!r}")
    return Path(spec.origin)


def _imports(tree: ast.Module, module: str) -> dict[str, tuple[str, str]]:
    """Names imported at module level -> (module, name)."""
    found = {}
    package = module.rsplit(".", 1)[0]
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module is not None:
            base = node.module if not node.level else f"{package}.{node.module}"
            for alias in node.names:
                found[alias.asname or alias.name] = (base, alias.name)
    return found


def _field_doc(lines: list[str], node: ast.AnnAssign) -> str:
    """The comment at the end of the field's last line, plus the following comment-only lines that continue it:
    their ``#`` indented past the field, or their text aligned under the comment (``#      more text``); a comment
    at the field's indentation whose text starts right away is a section heading, not part of the doc."""
    end = node.end_lineno - 1
    text = lines[end]
    hash_at = text.find("#", len(text) - len(text.lstrip()) + 1)
    if hash_at < 0:
        return ""
    doc = [text[hash_at + 1:].strip()]
    for following in lines[end + 1:]:
        stripped = following.strip()
        if not stripped.startswith("#"):
            break
        col = following.find("#")
        text_col = len(following) - len(following[col + 1:].lstrip())
        if col <= node.col_offset and text_col < hash_at:
            break
        doc.append(stripped[1:].strip())
    return " ".join(doc)


@cache
def config_fields(spec: str) -> tuple[Field, ...]:
    """The fields of the dataclass ``"module:Class"`` (base classes' first, overridden ones in place)."""
    module, name = spec.split(":")
    path = _module_file(module)
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source)
    lines = source.splitlines()
    cls = next((n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name), None)
    if cls is None:
        raise ConfigError(f"{path}: no class {name}")
    fields: dict[str, Field] = {}
    imports = _imports(tree, module)
    for base in cls.bases:
        if isinstance(base, ast.Name):
            where = imports.get(base.id)
            base_spec = f"{where[0]}:{where[1]}" if where else f"{module}:{base.id}"
            for f in config_fields(base_spec):
                fields[f.name] = f
    for node in cls.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            default = "" if node.value is None else ast.get_source_segment(source, node.value) or ""
            if default.startswith("field(default_factory="):
                default = default.removeprefix("field(default_factory=").removesuffix(")")
                default = default.removeprefix("lambda: ")
            old = fields.get(node.target.id)
            doc = _field_doc(lines, node) or (old.doc if old else "")
            fields[node.target.id] = Field(node.target.id, ast.unparse(node.annotation), default, doc)
    return tuple(fields.values())


def describe_fields(spec: str, width: int = 118) -> str:
    """One line per key: ``name = default  doc``, for ``--help``."""
    fields = config_fields(spec)
    left = [f"{f.name}={f.default}" if f.default else f.name for f in fields]
    pad = min(max(len(x) for x in left) + 2, 44)
    out = []
    for text, f in zip(left, fields):
        line = f"  {text:<{pad}} {f.doc}".rstrip()
        out.append(line if len(line) <= width or not f.doc else f"  {text}\n  {'':<{pad}} {f.doc}")
    return "\n".join(out)


def check_overrides(spec: str, command: str, overrides: list[str]) -> None:
    """`ConfigError` for an override whose top-level key is not a field (Hydra's ``+key`` / ``~key`` / ``++key``
    forms are left to Hydra); the message suggests the closest field."""
    names = [f.name for f in config_fields(spec)]
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key=value")
        key = item.split("=", 1)[0]
        if key.startswith(("+", "~")):
            continue
        top = key.split(".", 1)[0]
        if top not in names:
            raise ConfigError(f"unknown key '{top}' for '{command}'{did_you_mean(top, names)} "
                              f"(`textless {command} --help` lists the keys)")
