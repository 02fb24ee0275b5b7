"""Where a dotted name in a candidate leads on the host, found by static lookups on the real modules (nothing
of the candidate runs, torch's lazy submodules are not imported): the namespaces and callables the static
check allows or refuses (tools/static_check.py applies them to every attribute chain of a candidate)."""
from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import types

ALLOWED_IMPORTS = frozenset({
    "torch", "torch.nn", "torch.nn.functional", "math", "functools", "typing", "collections",
    "itertools", "__future__",
})
# Module objects an attribute chain may pass through: what a network needs. torch.nn.utils(.parametrizations)
# for weight/spectral norm, torch.autograd (top level only) for custom autograd Functions, torch.nn.modules.*
# because nn's classes live there. Not torch.utils (data loaders, checkpoint, cpp_extension, hooks), torch.cuda
# or torch.amp: the harness owns data, device and precision.
ALLOWED_NAMESPACES = frozenset({
    "torch", "torch.nn", "torch.nn.functional", "torch.nn.init", "torch.nn.utils", "torch.nn.utils.parametrizations",
    "torch.nn.modules", "torch.linalg", "torch.fft", "torch.special", "torch.autograd",
    "math", "functools", "typing", "collections", "collections.abc", "itertools",
})
_ALLOWED_PREFIXES = ("torch.nn.modules.",)
_NAMESPACES_TEXT = ("torch, torch.nn (functional, init, utils), torch.linalg, torch.fft, torch.special, "
                    "torch.autograd, math, functools, typing, collections, itertools")
# Harmless queries inside refused namespaces that small models write in their `__main__` demo code.
ALLOWED_LEAVES = frozenset({"torch.cuda.is_available"})
# Callables inside allowed namespaces that reach files, native code or the interpreter (compared by identity, so
# every alias of them is caught: F.torch.load, nn.modules.module.torch.save...).
BANNED_CALLABLES = frozenset({
    "torch.load", "torch.save", "torch.from_file", "torch.frombuffer", "torch.from_dlpack", "torch.compile",
    "torch.cond", "torch.get_device_module", "torch.set_default_device", "torch.set_default_tensor_type",
    "typing.get_type_hints", "typing.ForwardRef", "functools.singledispatch", "functools.singledispatchmethod",
    "functools.update_wrapper", "functools.wraps",
})
# Used only when torch cannot be imported on the host: components of a chain rooted at torch that are refused.
FALLBACK_DENIED = frozenset({
    "utils", "jit", "package", "hub", "ops", "library", "classes", "onnx", "fx", "export", "compiler",
    "distributed", "multiprocessing", "backends", "cuda", "overrides", "storage", "serialization",
})
_MISSING = object()
# Private names of tensors/storages that stay refused on `self` (used only when torch is not importable).
FALLBACK_TENSOR_PRIVATE = frozenset({
    "_typed_storage", "_untyped_storage", "_cdata", "_base", "_new_shared_filename_cpu", "_share_filename_cpu_",
    "_new_shared_fd_cpu", "_share_fd_cpu_", "_new_using_filename_cpu", "_set_from_file",
})


@functools.lru_cache(maxsize=4096)
def resolve(path: tuple[str, ...]) -> tuple[str | None, bool]:
    """(why the dotted path is refused or None, whether it names a module). Static lookups on the host's real
    modules: nothing of the candidate runs. A path that does not resolve is let through (fails at run time)."""
    if ".".join(path) in ALLOWED_LEAVES:
        return None, False
    try:
        obj: object = importlib.import_module(path[0])
    except ImportError:
        return fallback(path), ".".join(path) in ALLOWED_IMPORTS
    banned = _banned_objects()
    for i in range(1, len(path)):
        dotted = ".".join(path[:i + 1])
        if path[i].startswith("register_"):
            return f"'{dotted}' is not allowed: registering hooks or operators on torch itself", False
        obj = _lookup(obj, path[i])
        if obj is _MISSING:
            return None, False
        if isinstance(obj, types.ModuleType) and not _namespace_allowed(obj.__name__):
            return f"'{dotted}' is outside the namespaces a network needs (allowed: {_NAMESPACES_TEXT})", False
        if dotted in BANNED_CALLABLES or any(obj is b for b in banned):
            return f"'{dotted}' is not allowed (it reaches files, native code or evaluates strings)", False
    return None, isinstance(obj, types.ModuleType)


def fallback(path: tuple[str, ...]) -> str | None:
    """The host lacks the module (torch not installed): known-bad namespaces and callables, by name."""
    for i in range(1, len(path)):
        dotted = ".".join(path[:i + 1])
        if dotted in BANNED_CALLABLES or path[0] == "torch" and path[i] in FALLBACK_DENIED:
            return f"'{dotted}' is not allowed (it reaches files, native code or evaluates strings)"
    return None


def _lookup(obj: object, name: str) -> object:
    """`obj.name` without running descriptors, module __getattr__ hooks or lazy submodule imports."""
    if isinstance(obj, types.ModuleType):
        if name in vars(obj):
            return vars(obj)[name]
        sub = f"{obj.__name__}.{name}"
        try:
            spec = importlib.util.find_spec(sub)
        except (ImportError, ValueError, AttributeError):
            spec = None
        if spec is None:
            return _MISSING
        # A submodule not imported yet: imported only when allowed (torch's own code), else judged by its name.
        return importlib.import_module(sub) if _namespace_allowed(sub) else types.ModuleType(sub)
    try:
        value = inspect.getattr_static(obj, name)
    except AttributeError:
        return _MISSING
    return value.__func__ if isinstance(value, (staticmethod, classmethod)) else value


def _namespace_allowed(name: str) -> bool:
    return name in ALLOWED_NAMESPACES or name.startswith(_ALLOWED_PREFIXES)


@functools.lru_cache(maxsize=1)
def _banned_objects() -> tuple[object, ...]:
    found = []
    for path in sorted(BANNED_CALLABLES):
        root, *rest = path.split(".")
        try:
            obj: object = importlib.import_module(root)
        except ImportError:
            continue
        for name in rest:
            obj = getattr(obj, name, _MISSING)
        if obj is not _MISSING:
            found.append(obj)
    return tuple(found)


@functools.lru_cache(maxsize=1)
def tensor_private_names() -> frozenset[str]:
    """Private names of tensors and storages (less nn.Module's own): refused even on `self`."""
    try:
        import torch
    except ImportError:
        return FALLBACK_TENSOR_PRIVATE
    names = {n for c in (torch.Tensor, torch.UntypedStorage, torch.TypedStorage) for n in dir(c)
             if n.startswith("_") and not (n.startswith("__") and n.endswith("__"))}
    return frozenset(names - set(dir(torch.nn.Module())))  # an instance: its hook dicts are instance attributes
