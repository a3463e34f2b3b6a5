"""Load third-party PyTorch checkpoints without running their code: a restricted unpickler with stubs.

Why: a pickle is a small program; unpickling can call any importable function (`os.system`, `builtins.eval`...).
Research checkpoints (fairseq, old vocoders, LMs) pickle their training framework's own objects next to the tensors:
fairseq stores its `cfg` as an OmegaConf `DictConfig` (or an `argparse.Namespace`, or a plain dict), `task_state` holds
`fairseq.data.dictionary.Dictionary` objects, old `extra_state` holds `fairseq.meters` objects. `torch.load` with
``weights_only=True`` refuses all of these, and ``weights_only=False`` with the normal unpickler would import fairseq
(not installed, and we do not want it) and run whatever the file asks for.

`RestrictedUnpickler.find_class` is the single place where a pickle names a Python global. It returns:

* allow-listed globals (`allowed_globals()`): torch's tensor/storage rebuild functions, storage types, dtypes,
  `torch.Size`/`device`/`Parameter` (the set `torch._weights_only_unpickler` allows); builtin containers and scalars;
  `collections.OrderedDict`/`defaultdict`/`Counter`/`deque`; `argparse.Namespace`; OmegaConf's `DictConfig`,
  `ListConfig`, value nodes, `Metadata`, `ContainerMetadata`; `typing.Any`/`Dict`/`List`/...; numpy scalars, dtypes and
  arrays; `pathlib` pure/posix paths; `datetime` values. A few helpers that pickle emits for ordinary objects
  (`copyreg._reconstructor`, `operator.getitem` on typing forms, `builtins.type(None)`, numpy's `_reconstruct`) are
  replaced by checked versions;
* a *stub class* for any other class-like name (CamelCase; e.g. `fairseq.models.hubert.hubert.HubertConfig`, fairseq's
  `Choices` enums, `Dictionary`): a class created on the fly, named after the original (`__module__` kept), that accepts
  any constructor arguments, `__setstate__` state, list appends and item assignments, records them, and never runs code;
* `UnsafePickleError` for everything else: non-allow-listed functions (`os.system`, `builtins.eval`, `builtins.getattr`,
  `subprocess.Popen`, any name in a dangerous module such as os/subprocess/sys/builtins/importlib/pickle/ctypes...).

No module named by a pickle is ever imported: the allow-list holds objects from modules we import ourselves. BUILD
(setting an object's state) is only allowed on stub instances and instances of allow-listed classes, never on a class
or function, so a pickle cannot monkey-patch this process either. Loaders that need more (vocoders, LMs) pass
`extra_globals` to `safe_torch_load`.

`to_plain()` turns what comes out (real or stubbed OmegaConf containers, `Namespace`, enum-like stubs, numpy scalars)
into plain dicts/lists/values without calling OmegaConf's resolver, and `resolve_interpolations()` resolves the
`${a.b.c}` references OmegaConf configs contain (fairseq: `label_rate: ${task.label_rate}`).
"""

from __future__ import annotations

import _compat_pickle
import argparse
import collections
import copyreg
import datetime
import enum
import functools
import io
import pathlib
import pickle
import re
import types
import typing
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO

from textless.errors import FormatError, TextlessError

# Modules from which nothing is ever stubbed: a checkpoint naming one of them is refused outright (the top-level package
# is compared, so "os.path" and "importlib.util" are covered).
DENIED_MODULES = frozenset({
    "__builtin__", "_codecs", "_io", "_operator", "_pickle", "asyncio", "builtins", "code", "codecs", "codeop",
    "commands", "copyreg", "ctypes", "functools", "gc", "importlib", "inspect", "io", "marshal", "multiprocessing",
    "nt", "operator", "os", "pdb", "pickle", "platform", "posix", "pty", "runpy", "shutil", "signal", "socket",
    "subprocess", "sys", "tempfile", "threading", "timeit", "types", "webbrowser", "zipimport",
})


_NOT_ALLOWED = ("it is not an allowed global (a checkpoint only needs tensors, containers and config objects; "
                "calling this could run arbitrary code)")


class UnsafePickleError(TextlessError):
    """A pickle names a global that is neither allow-listed nor a class that can be stubbed (or misuses one)."""

    def __init__(self, global_name: str, path: str | Path | None = None, reason: str = _NOT_ALLOWED):
        self.global_name = global_name
        self.path = None if path is None else str(path)
        self.reason = reason
        where = f"{self.path}: " if self.path else ""
        super().__init__(f"{where}refusing to unpickle '{global_name}': {reason}")


# --------------------------------------------------------------------------------------------------------------------
# Stubs
# --------------------------------------------------------------------------------------------------------------------


class PickleStub:
    """Base of the classes created for globals we do not import. Records what the pickle gives; runs nothing.

    `_stub_args` / `_stub_kwargs`: constructor arguments (REDUCE / NEWOBJ); `_stub_state`: what `__setstate__` got
    (usually the original object's `__dict__`); `_stub_items` / `_stub_list`: SETITEMS / APPENDS data of dict or list
    subclasses. Attribute reads fall back to `_stub_state` when it is a dict, so `stub.symbols` works.
    """

    _stub_origin: str = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> typing.Self:
        obj = object.__new__(cls)
        obj.__dict__.update(_stub_args=args, _stub_kwargs=kwargs, _stub_state=None, _stub_items={}, _stub_list=[])
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        self.__dict__["_stub_state"] = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.__dict__["_stub_items"][key] = value

    def append(self, value: Any) -> None:
        self.__dict__["_stub_list"].append(value)

    def extend(self, values: Any) -> None:
        self.__dict__["_stub_list"].extend(values)

    def __getattr__(self, name: str) -> Any:
        state = self.__dict__.get("_stub_state")
        if not name.startswith("__") and isinstance(state, dict) and name in state:
            return state[name]
        raise AttributeError(f"stub of '{type(self)._stub_origin}' has no attribute '{name}'")

    @property
    def value(self) -> Any:
        """The value of an enum-like stub (`Choices("layer_norm")` -> "layer_norm")."""
        return stub_enum_value(self)

    def __reduce__(self) -> Any:
        raise TypeError(f"a stub of '{type(self)._stub_origin}' cannot be pickled again")

    def __repr__(self) -> str:
        return f"<stub {type(self)._stub_origin} args={self._stub_args!r}>"


@functools.cache
def stub_class(module: str, name: str) -> type[PickleStub]:
    """The (cached, so identity is stable) stub class standing for `module.name`."""
    short = name.rsplit(".", 1)[-1]
    return type(short, (PickleStub,), {"__module__": module, "__qualname__": name, "_stub_origin": f"{module}.{name}"})


def is_stub(obj: Any) -> bool:
    """True for stub instances and stub classes."""
    return isinstance(obj, PickleStub) or (isinstance(obj, type) and issubclass(obj, PickleStub))


def stub_origin(obj: Any) -> str:
    """'module.name' of the global a stub (instance or class) stands for."""
    return obj._stub_origin


_PRIMITIVES = (str, int, float, bool, bytes, type(None))


def stub_enum_value(obj: PickleStub) -> Any:
    """The value of an enum-like stub (one primitive constructor argument, nothing else), else raise ValueError."""
    d = obj.__dict__
    if len(d["_stub_args"]) == 1 and isinstance(d["_stub_args"][0], _PRIMITIVES) and not d["_stub_kwargs"] \
            and d["_stub_state"] is None and not d["_stub_items"] and not d["_stub_list"]:
        return d["_stub_args"][0]
    raise ValueError(f"{obj!r} is not an enum-like stub")


# --------------------------------------------------------------------------------------------------------------------
# Checked replacements for helpers pickle emits for ordinary objects
# --------------------------------------------------------------------------------------------------------------------

_BUILTIN_BASES = (object, dict, list, tuple, set, int, float, str, bytes)


def _constructible(cls: Any) -> bool:
    return isinstance(cls, type) and (issubclass(cls, PickleStub) or cls in _allowed_classes())


def _safe_reconstructor(cls: Any, base: Any, state: Any) -> Any:
    """`copyreg._reconstructor` (protocol 0/1 objects), only for stubs and allow-listed classes."""
    if not _constructible(cls) or base not in _BUILTIN_BASES:
        raise UnsafePickleError(f"copyreg._reconstructor({getattr(cls, '__qualname__', cls)!r})")
    if issubclass(cls, PickleStub):
        return cls(state) if state is not None else cls()
    return copyreg._reconstructor(cls, base, state)


def _safe_newobj(cls: Any, *args: Any) -> Any:
    """`copyreg.__newobj__`, only for stubs and allow-listed classes."""
    if not _constructible(cls):
        raise UnsafePickleError(f"copyreg.__newobj__({getattr(cls, '__qualname__', cls)!r})")
    return cls.__new__(cls, *args)


def _safe_newobj_ex(cls: Any, args: tuple, kwargs: dict) -> Any:
    if not _constructible(cls):
        raise UnsafePickleError(f"copyreg.__newobj_ex__({getattr(cls, '__qualname__', cls)!r})")
    return cls.__new__(cls, *args, **kwargs)


_TYPING_NAMES = ("Any", "Dict", "List", "Tuple", "Set", "Optional", "Union", "Type", "Sequence", "Mapping")
# the legacy aliases (typing.Dict...) are what old pickles name, so they are fetched by name
_TYPING_FORMS = tuple(getattr(typing, n) for n in _TYPING_NAMES if n != "Any") + (dict, list, tuple, set)


def _safe_getitem(obj: Any, item: Any) -> Any:
    """`operator.getitem`, which pickles typing generics (`List[str]`); only for typing forms, never for data."""
    if not any(obj is form for form in _TYPING_FORMS):
        raise UnsafePickleError("operator.getitem (only allowed on typing forms)")
    try:
        return obj[item]
    except TypeError:  # e.g. a stub class where typing wants something else: keep the bare form
        return obj


def _safe_type(obj: Any) -> type:
    """`builtins.type`, which pickles `type(None)`; only for the builtin singletons."""
    if obj is None or obj is Ellipsis or obj is NotImplemented:
        return type(obj)
    raise UnsafePickleError("builtins.type (only type(None) / type(...) are allowed)")


def _numpy_globals() -> dict[str, Any]:
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is a dependency
        return {}
    try:
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct, scalar

    def safe_reconstruct(cls: Any, shape: Any, dtype: Any) -> Any:
        if cls is not np.ndarray:
            raise UnsafePickleError(f"numpy _reconstruct({getattr(cls, '__qualname__', cls)!r})")
        return _reconstruct(cls, shape, dtype)

    def safe_frombuffer(buf: Any, dtype: Any, shape: Any, order: str) -> Any:  # protocol-5 arrays
        if not isinstance(buf, bytes | bytearray | pickle.PickleBuffer) or not isinstance(dtype, np.dtype) \
                or dtype.hasobject or order not in ("C", "F"):
            raise UnsafePickleError("numpy _frombuffer (only plain buffers of non-object dtypes are allowed)")
        return np.frombuffer(buf, dtype=dtype).reshape(shape, order=order)

    out: dict[str, Any] = {"numpy.dtype": np.dtype, "numpy.ndarray": np.ndarray}
    for mod in ("numpy.core", "numpy._core"):
        out[f"{mod}.multiarray.scalar"] = scalar
        out[f"{mod}.multiarray._reconstruct"] = safe_reconstruct
        out[f"{mod}.numeric._frombuffer"] = safe_frombuffer
    for name in dir(getattr(np, "dtypes", None)):
        cls = getattr(np.dtypes, name)
        if isinstance(cls, type) and issubclass(cls, np.dtype):
            out[f"numpy.dtypes.{name}"] = cls
    return out


def _torch_globals() -> dict[str, Any]:
    import torch

    out: dict[str, Any] = {}
    try:  # the authoritative list of what `weights_only=True` accepts (private API, hence the fallback below)
        from torch._weights_only_unpickler import _get_allowed_globals

        out.update(_get_allowed_globals())
    except (ImportError, AttributeError):  # pragma: no cover
        pass
    for name in ("_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3", "_rebuild_parameter",
                 "_rebuild_parameter_with_state", "_rebuild_qtensor", "_rebuild_sparse_tensor",
                 "_rebuild_device_tensor_from_numpy", "_rebuild_device_tensor_from_cpu_tensor",
                 "_rebuild_meta_tensor_no_storage", "_rebuild_wrapper_subclass", "_rebuild_nested_tensor"):
        if hasattr(torch._utils, name):
            out[f"torch._utils.{name}"] = getattr(torch._utils, name)
    out.update({
        "torch._tensor._rebuild_from_type_v2": torch._tensor._rebuild_from_type_v2,
        "torch.nn.parameter.Parameter": torch.nn.Parameter,
        "torch.serialization._get_layout": torch.serialization._get_layout,
        "torch.Size": torch.Size,
        "torch.device": torch.device,
        "torch.Tensor": torch.Tensor,
        "torch.storage.UntypedStorage": torch.UntypedStorage,
        "torch.storage.TypedStorage": torch.TypedStorage,
    })
    # dtypes, layouts, memory formats, qschemes are pickled as globals ("torch.float32")
    for name, value in vars(torch).items():
        if isinstance(value, (torch.dtype, torch.layout, torch.memory_format, torch.qscheme)):
            out[f"torch.{name}"] = value
    return out


def _omegaconf_globals() -> dict[str, Any]:
    try:
        import omegaconf
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        return {}
    from omegaconf import base, dictconfig, listconfig, nodes

    out: dict[str, Any] = {
        "omegaconf.dictconfig.DictConfig": dictconfig.DictConfig,
        "omegaconf.listconfig.ListConfig": listconfig.ListConfig,
        "omegaconf.DictConfig": omegaconf.DictConfig,
        "omegaconf.ListConfig": omegaconf.ListConfig,
    }
    for module, names in ((base, ("Metadata", "ContainerMetadata", "UnionNode")),
                          (nodes, ("AnyNode", "StringNode", "IntegerNode", "FloatNode", "BooleanNode", "EnumNode",
                                   "BytesNode", "PathNode", "ValueNode"))):
        for name in names:
            if hasattr(module, name):  # the set differs between OmegaConf versions
                out[f"{module.__name__}.{name}"] = getattr(module, name)
    return out


def _stdlib_globals() -> dict[str, Any]:
    out: dict[str, Any] = {f"builtins.{t.__name__}": t for t in (
        dict, list, tuple, set, frozenset, bytearray, bytes, complex, int, float, str, bool, slice, range, object)}
    out.update({
        "builtins.type": _safe_type,
        "collections.OrderedDict": collections.OrderedDict,
        "collections.defaultdict": collections.defaultdict,
        "collections.Counter": collections.Counter,
        "collections.deque": collections.deque,
        "argparse.Namespace": argparse.Namespace,
        "_codecs.encode": __import__("codecs").encode,  # protocol-2 pickles of bytes
        "copyreg._reconstructor": _safe_reconstructor,
        "copyreg.__newobj__": _safe_newobj,
        "copyreg.__newobj_ex__": _safe_newobj_ex,
        "operator.getitem": _safe_getitem,
        "_operator.getitem": _safe_getitem,
        "pathlib.PosixPath": pathlib.PosixPath,
        "pathlib.PurePosixPath": pathlib.PurePosixPath,
        "pathlib.PureWindowsPath": pathlib.PureWindowsPath,
        "datetime.datetime": datetime.datetime,
        "datetime.date": datetime.date,
        "datetime.time": datetime.time,
        "datetime.timedelta": datetime.timedelta,
        "datetime.timezone": datetime.timezone,
    })
    for name in _TYPING_NAMES:
        out[f"typing.{name}"] = getattr(typing, name)
    return out


@functools.lru_cache(maxsize=1)
def allowed_globals() -> Mapping[str, Any]:
    """'module.name' -> object for every global a pickle may name (read-only view)."""
    out = _stdlib_globals()
    out.update(_numpy_globals())
    out.update(_omegaconf_globals())
    out.update(_torch_globals())
    return types.MappingProxyType(out)


@functools.lru_cache(maxsize=1)
def _allowed_classes() -> frozenset:
    return frozenset(v for v in allowed_globals().values() if isinstance(v, type))


@functools.lru_cache(maxsize=1)
def _stateful_classes() -> tuple[type, ...]:
    """Allowed classes whose instances may receive pickled state (BUILD): not `object` (everything is one), not the
    typing forms (isinstance() refuses them), not metaclasses."""
    return tuple(c for c in _allowed_classes()
                 if c is not object and c.__module__ != "typing" and not issubclass(c, type))


def _class_like(name: str) -> bool:
    """CamelCase names are classes by convention; functions are lower_case (and are never stubbed)."""
    last = name.rsplit(".", 1)[-1].lstrip("_")
    return last[:1].isupper()


# --------------------------------------------------------------------------------------------------------------------
# Unpickler and the pickle-module facade torch.load wants
# --------------------------------------------------------------------------------------------------------------------


class _Dispatch(dict):
    """pickle's opcode table; an unknown opcode is an UnpicklingError (as in the C unpickler), not a KeyError."""

    def __missing__(self, opcode: int) -> Any:
        raise pickle.UnpicklingError(f"invalid load key, {bytes([opcode])!r}")


class RestrictedUnpickler(pickle._Unpickler):
    """An unpickler whose `find_class` returns only allow-listed globals or stubs (see the module docstring).

    It derives from pickle's pure-Python unpickler (the C one cannot be hooked per opcode) to also guard BUILD, the
    opcode that sets an object's state: only instances of stubs and allow-listed classes may receive state. Without
    this a pickle could `setattr` on an allow-listed *class or function* (`argparse.Namespace.__init__ = ...`,
    a torch function's `__defaults__`) and alter this process. Checkpoint pickles hold only references to tensor
    storages, so the pure-Python speed does not matter.
    """

    extra_globals: Mapping[str, Any] = types.MappingProxyType({})
    dispatch: typing.ClassVar[dict] = _Dispatch(pickle._Unpickler.dispatch)

    def find_class(self, module: str, name: str) -> Any:
        # pickle.Unpickler.find_class maps Python 2 names (protocol < 3, which torch.save uses) before importing;
        # overriding it means doing that here: "__builtin__ unicode" -> "builtins str".
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        qualified = f"{module}.{name}"
        found = self.extra_globals.get(qualified, allowed_globals().get(qualified))
        if found is not None:
            return found
        if module.split(".", 1)[0] in DENIED_MODULES or not _class_like(name):
            raise UnsafePickleError(qualified)
        return stub_class(module, name)

    def load_build(self) -> None:
        target = self.stack[-2]  # BUILD pops the state (stack[-1]) and applies it to the object below it
        if isinstance(target, type) or not isinstance(target, (PickleStub, *_stateful_classes())):
            name = getattr(target, "__qualname__", type(target).__qualname__)
            raise UnsafePickleError(name, reason="a pickle may set the state of objects, not of classes or functions")
        pickle._Unpickler.load_build(self)

    dispatch[pickle.BUILD[0]] = load_build


def make_pickle_module(extra_globals: Mapping[str, Any] | None = None) -> types.ModuleType:
    """A module-like object with `Unpickler`, `load`, `loads` (what `torch.load` takes as ``pickle_module``).

    `extra_globals` ('module.name' -> object) lets a loader allow more; only pass objects that are safe to call with
    arbitrary arguments.
    """
    extra = types.MappingProxyType(dict(extra_globals or {}))
    unpickler = type("RestrictedUnpickler", (RestrictedUnpickler,), {"extra_globals": extra})
    module = types.ModuleType("textless_restricted_pickle")
    module.Unpickler = unpickler  # type: ignore[attr-defined]
    module.load = lambda file, **kw: unpickler(file, **kw).load()  # type: ignore[attr-defined]
    module.loads = lambda data, **kw: unpickler(io.BytesIO(data), **kw).load()  # type: ignore[attr-defined]
    module.UnpicklingError = pickle.UnpicklingError  # type: ignore[attr-defined]
    return module


_DEFAULT_MODULE = make_pickle_module()
Unpickler = RestrictedUnpickler


def load(file: BinaryIO, **kwargs: Any) -> Any:
    """`pickle.load` with the restricted unpickler."""
    return RestrictedUnpickler(file, **kwargs).load()


def loads(data: bytes, **kwargs: Any) -> Any:
    """`pickle.loads` with the restricted unpickler."""
    return RestrictedUnpickler(io.BytesIO(data), **kwargs).load()


# What torch.load / pickle raise for a file that is not a (complete, well-formed) PyTorch pickle; the pure-Python
# unpickler reports a malformed stack or memo as IndexError / KeyError, a misused allowed object as TypeError.
_NOT_A_CHECKPOINT = (pickle.UnpicklingError, EOFError, RuntimeError, ValueError, UnicodeDecodeError,
                     zipfile.BadZipFile, IndexError, KeyError, TypeError, AttributeError)


def safe_torch_load(path: str | Path, map_location: Any = "cpu",
                    extra_globals: Mapping[str, Any] | None = None) -> Any:
    """`torch.load` of an untrusted checkpoint: tensors come back as tensors, unknown classes as stubs.

    Raises `UnsafePickleError` (naming the global) for a pickle that asks for a function it may not call, and
    `FormatError` for a file that is not a PyTorch pickle at all.
    """
    import torch

    path = Path(path)
    pickle_module = _DEFAULT_MODULE if not extra_globals else make_pickle_module(extra_globals)
    try:
        with open(path, "rb") as f:
            # weights_only=False is safe here: it only means torch does not substitute its own restricted unpickler
            # for ours. Every global the file names goes through RestrictedUnpickler.find_class, which returns only
            # allow-listed callables or inert stubs and raises for anything else, so no code from the file runs.
            return torch.load(f, map_location=map_location, weights_only=False, pickle_module=pickle_module)
    except UnsafePickleError as exc:
        raise UnsafePickleError(exc.global_name, path, exc.reason) from None
    except FileNotFoundError:
        raise
    except _NOT_A_CHECKPOINT as exc:
        raise FormatError(path, f"not a readable PyTorch checkpoint ({type(exc).__name__}: {exc})") from exc


# --------------------------------------------------------------------------------------------------------------------
# Plain values out of unpickled configs
# --------------------------------------------------------------------------------------------------------------------

_MISSING = "???"  # OmegaConf's marker for a mandatory value that was never set
_MAX_DEPTH = 64


def _instance_state(obj: Any) -> dict | None:
    """The attribute dict of a real OmegaConf object or the recorded state of a stubbed one."""
    if isinstance(obj, PickleStub):
        state = obj.__dict__["_stub_state"]
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[0], dict):  # (dict, slots) form
            state = state[0]
        return state if isinstance(state, dict) else None
    return getattr(obj, "__dict__", None)


def _is_omegaconf_object(obj: Any) -> bool:
    module = type(obj).__module__ or ""
    return module.split(".", 1)[0] == "omegaconf" and not isinstance(obj, type)


def _plain_omegaconf(obj: Any, depth: int) -> Any:
    state = _instance_state(obj) or {}
    if "_content" in state:  # DictConfig / ListConfig
        content = state["_content"]
        if content is None or content == _MISSING:
            return None
        if isinstance(content, str):  # the whole container is an interpolation
            return content
        if isinstance(content, Mapping):
            return {_plain_key(k): to_plain(v, depth + 1) for k, v in content.items()}
        return [to_plain(v, depth + 1) for v in content]
    if "_val" in state:  # value node
        return None if state["_val"] == _MISSING else to_plain(state["_val"], depth + 1)
    return {k: to_plain(v, depth + 1) for k, v in state.items() if not k.startswith("_")}


def _plain_key(key: Any) -> Any:
    if isinstance(key, enum.Enum):
        return key.name
    if isinstance(key, PickleStub):
        try:
            return stub_enum_value(key)
        except ValueError:
            return repr(key)
    return key


def _plain_stub(obj: PickleStub, depth: int) -> Any:
    try:
        return stub_enum_value(obj)
    except ValueError:
        pass
    d = obj.__dict__
    state = _instance_state(obj)
    if state is not None and not d["_stub_args"] and not d["_stub_kwargs"]:
        return {k: to_plain(v, depth + 1) for k, v in state.items()}
    return {"__stub__": stub_origin(obj), "args": to_plain(list(d["_stub_args"]), depth + 1),
            "kwargs": to_plain(d["_stub_kwargs"], depth + 1), "state": to_plain(d["_stub_state"], depth + 1)}


def to_plain(obj: Any, _depth: int = 0) -> Any:
    """Plain dicts / lists / scalars from an unpickled config (DictConfig, ListConfig, Namespace, stubs...).

    OmegaConf containers (real or stubbed) are read from their internal `_content` / `_val` fields, so no resolver,
    validation or metadata (which may reference stubbed fairseq dataclasses) is involved. Mandatory-but-missing values
    ('???') become None; interpolation strings ('${task.normalize}') are kept (see `resolve_interpolations`). Enum
    values and enum-like stubs (fairseq `ChoiceEnum` members) become their value; stub classes their dotted name.
    """
    if _depth > _MAX_DEPTH:
        raise ValueError("configuration nested too deeply")
    if isinstance(obj, _PRIMITIVES):
        return obj
    if isinstance(obj, enum.Enum):
        return obj.value if isinstance(obj.value, _PRIMITIVES) else obj.name
    if isinstance(obj, type):
        return stub_origin(obj) if issubclass(obj, PickleStub) else f"{obj.__module__}.{obj.__qualname__}"
    if _is_omegaconf_object(obj):  # real or stubbed; before Mapping: DictConfig's own methods would run the resolver
        return _plain_omegaconf(obj, _depth)
    if isinstance(obj, PickleStub):
        return _plain_stub(obj, _depth)
    if isinstance(obj, argparse.Namespace):
        return {k: to_plain(v, _depth + 1) for k, v in vars(obj).items()}
    if isinstance(obj, Mapping):
        return {_plain_key(k): to_plain(v, _depth + 1) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset, collections.deque)):
        return [to_plain(v, _depth + 1) for v in obj]
    if isinstance(obj, pathlib.PurePath):
        return str(obj)
    if hasattr(obj, "item") and type(obj).__module__ == "numpy":  # numpy scalar
        return obj.item()
    return obj


_INTERPOLATION = re.compile(r"^\$\{([A-Za-z_][\w]*(?:\.[A-Za-z_]\w*)*)\}$")


def _lookup(root: Any, dotted: str) -> tuple[bool, Any]:
    node = root
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def resolve_interpolations(root: Any) -> Any:
    """Replace every string that is exactly an absolute OmegaConf interpolation ('${task.label_rate}') by the value
    it points to in `root` (a `to_plain` tree). References that cannot be resolved are left as they are."""

    def resolve_value(value: Any, seen: frozenset) -> Any:
        if isinstance(value, str):
            match = _INTERPOLATION.match(value)
            if match and match.group(1) not in seen:
                found, target = _lookup(root, match.group(1))
                if found:
                    return resolve_value(target, seen | {match.group(1)})
            return value
        if isinstance(value, dict):
            return {k: resolve_value(v, seen) for k, v in value.items()}
        if isinstance(value, list):
            return [resolve_value(v, seen) for v in value]
        return value

    return resolve_value(root, frozenset())


def plain_config(obj: Any) -> Any:
    """`to_plain` followed by `resolve_interpolations`: a checkpoint's config as plain Python data."""
    return resolve_interpolations(to_plain(obj))


__all__ = [
    "DENIED_MODULES", "PickleStub", "RestrictedUnpickler", "Unpickler", "UnsafePickleError", "allowed_globals",
    "is_stub", "load", "loads", "make_pickle_module", "plain_config", "resolve_interpolations", "safe_torch_load",
    "stub_class", "stub_enum_value", "stub_origin", "to_plain",
]
