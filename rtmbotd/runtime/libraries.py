"""Each plugin's own libraries: the modules in its folder, visible to that plugin alone.

Plugin folders never go on `sys.path`: a plugin's `numbers.py` would shadow the standard
library for the engine's lazily imported SQLAlchemy and slack_sdk, and two plugins'
`helpers.py` would collide in `sys.modules`. Instead the code of a plugin (its files and
the libraries they import) runs with its own `__builtins__`, whose `__import__` sends a
top-level import of a name found in the plugin's folder to a private name,
`_rtmbotd_lib_<n>_<plugin>__<name>`, that `LibraryFinder` loads from that folder. This
holds for imports at load time and inside handlers later, on any thread. Other imports
(and all of the engine's) go the usual way. `importlib.import_module("helpers")` from
plugin code is not redirected: use the import statement.

A python-rtmbot 0.4 class plugin (`plugins.greeter.Greeter`, BASE_PATH as the folder) is
itself imported under the private name of its dotted module path, through importlib, so
its packages run first and relative imports (`from .util import x`, `from ..common import
y`) find their parents, as with `importlib.import_module("plugins.greeter")`. Each scope
remembers the source its modules ran from, so a reload sees an edited library.
"""
from __future__ import annotations

import builtins
import hashlib
import importlib
import importlib.util
import itertools
import re
import sys
from importlib.machinery import FrozenImporter, ModuleSpec, PathFinder, SourceFileLoader
from pathlib import Path
from types import ModuleType
from typing import Any, Iterable

PREFIX = "_rtmbotd_lib_"
_SCOPE_ID = re.compile(re.escape(PREFIX) + r"(\d+)_")
_ids = itertools.count(1)
_scopes: dict[int, "LibraryScope"] = {}      # live scopes by id (set by build threads, read by importers)
_import = builtins.__import__
# The engine's API: a plugin subclasses its Plugin, so a copy beside the plugin (a
# python-rtmbot checkout as BASE_PATH) must not stand in for it.
_ENGINE = frozenset({"rtmbotd", "rtmbot"})


def local_names(folder: Path) -> frozenset[str]:
    """Top-level modules in `folder` that its plugin's imports find first, as they would
    with the folder at the front of `sys.path`: `name.py` files and packages beat the
    installed modules, folders without `__init__.py` only names found nowhere else, and
    built-in and frozen modules (`sys`, `time`, `os`) cannot be shadowed at all, nor
    the engine's own packages."""
    names = set()
    try:
        entries = list(folder.iterdir())
    except OSError:
        return frozenset()
    for entry in entries:
        name = entry.stem if entry.suffix == ".py" else entry.name
        if not shadowable(name):
            continue
        if entry.suffix == ".py" and entry.is_file():
            names.add(name)
        elif entry.is_dir() and ((entry / "__init__.py").is_file()
                                 or (_holds_python(entry) and not _installed(name))):
            names.add(name)
    return frozenset(names)


def shadowable(name: str) -> bool:
    """Whether a module in a plugin's folder may take `name` for that plugin: not the
    engine's packages, nor a built-in or frozen module (their finders come first)."""
    return (name.isidentifier() and name not in _ENGINE and name not in sys.builtin_module_names
            and not _frozen(name))


def _frozen(name: str) -> bool:
    return FrozenImporter.find_spec(name) is not None


def _holds_python(folder: Path) -> bool:
    return any(folder.glob("*.py")) or any(folder.glob("*/*.py"))


def _installed(name: str) -> bool:
    """A module or regular package of that name on sys.path (namespace portions lose to it)."""
    spec = PathFinder.find_spec(name)
    return spec is not None and spec.origin is not None


class LibraryScope:
    """One loaded plugin's import path: its folder, its private module names, its builtins.

    `own` names top-level modules in the folder that are the plugin's even where an
    installed package of that name would win (the package of an ACTIVE_PLUGINS path)."""

    def __init__(self, plugin: str, folder: Path, own: Iterable[str] = ()) -> None:
        self.id = next(_ids)
        self.folder = folder
        safe = re.sub(r"\W", "_", plugin)
        self.prefix = f"{PREFIX}{self.id}_{safe}__"
        self._own = frozenset(name for name in own if shadowable(name))
        self.names = local_names(folder) | self._own
        self.builtins = dict(vars(builtins), __import__=self._import)
        self._presets: dict[str, dict] = {}      # private name -> globals set before it runs
        self._ran: dict[str, bytes] = {}         # source file -> sha256 of the source that ran
        self._missed: set[tuple[str, tuple[str, ...]]] = set()   # (submodule, folders) an import did not find
        _install()
        _scopes[self.id] = self

    def import_module(self, name: str, preset: dict) -> ModuleType:
        """Import the dotted module `name` from the folder as importlib does: its packages
        first, each in sys.modules while it runs and taken out again if it fails; `preset`
        goes into its globals before it runs. Its packages stay once imported, as with
        importlib (`forget` drops them)."""
        if name.partition(".")[0] not in self.names:
            raise ImportError(f"{name!r} cannot be loaded from {self.folder}: its top-level name is a "
                              f"built-in, frozen or rtmbotd module", name=name)
        fullname = self.prefix + name
        self._presets[fullname] = preset
        try:
            return importlib.import_module(fullname)
        finally:
            del self._presets[fullname]

    def unchanged(self) -> bool:
        """Whether every source file this scope's modules ran from still holds what ran, and
        no module appeared where an import looked (its folder's top level, a package's folder)."""
        if local_names(self.folder) | self._own != self.names:
            return False
        if any(_module_in(Path(folder), name) for name, folders in list(self._missed) for folder in folders):
            return False
        for path, digest in list(self._ran.items()):
            try:
                if hashlib.sha256(Path(path).read_bytes()).digest() != digest:
                    return False
            except OSError:
                return False
        return True

    def _import(self, name: str, globals: Any = None, locals: Any = None, fromlist: Any = (),
                level: int = 0) -> Any:
        if level == 0 and name.partition(".")[0] in self.names:
            name = self.prefix + name
        return _import(name, globals, locals, fromlist, level)

    def find_spec(self, fullname: str, path: Any) -> ModuleSpec | None:
        top, dot, _ = fullname.partition(".")
        local = top[len(self.prefix):]
        if not top.startswith(self.prefix) or local not in self.names:
            return None
        found = PathFinder.find_spec(fullname, path) if dot else PathFinder.find_spec(local, [str(self.folder)])
        if found is None:
            if dot:
                self._missed.add((fullname.rpartition(".")[2], tuple(path or ())))
            return None
        if isinstance(found.loader, SourceFileLoader):
            return importlib.util.spec_from_file_location(
                fullname, found.origin, loader=_ScopedLoader(fullname, found.origin, self),
                submodule_search_locations=found.submodule_search_locations)
        if found.origin is None and found.submodule_search_locations is not None:   # a folder without __init__.py
            spec = ModuleSpec(fullname, None, is_package=True)
            spec.submodule_search_locations = list(found.submodule_search_locations)
            return spec
        return None       # compiled extensions cannot be renamed: not importable as plugin libraries

    def forget(self) -> None:
        """Drop this scope and every library module it imported."""
        _scopes.pop(self.id, None)
        for name in [n for n in list(sys.modules) if n.startswith(self.prefix)]:
            sys.modules.pop(name, None)


def _module_in(folder: Path, name: str) -> bool:
    return (folder / f"{name}.py").is_file() or (folder / name).is_dir()


class _ScopedLoader(SourceFileLoader):
    """A source loader whose modules run with the scope's `__builtins__` (its imports),
    compiled from the source it records for `LibraryScope.unchanged`."""

    def __init__(self, fullname: str, path: str, scope: LibraryScope) -> None:
        super().__init__(fullname, path)
        self._scope = scope

    def exec_module(self, module: Any) -> None:
        module.__dict__.update(self._scope._presets.get(module.__name__, ()))
        module.__dict__["__builtins__"] = self._scope.builtins
        super().exec_module(module)

    def get_code(self, fullname: str) -> Any:
        # Never from __pycache__: a .pyc is trusted by the source's size and mtime in whole
        # seconds, so an edit within the same second could run the old code under the new hash.
        source = self.get_data(self.path)
        self._scope._ran[self.path] = hashlib.sha256(source).digest()
        return self.source_to_code(source, self.path)


class LibraryFinder:
    """A meta path finder for the private names, each loaded from its scope's folder."""

    @staticmethod
    def find_spec(fullname: str, path: Any = None, target: Any = None) -> ModuleSpec | None:
        if not fullname.startswith(PREFIX):
            return None
        match = _SCOPE_ID.match(fullname)
        scope = _scopes.get(int(match.group(1))) if match else None
        return scope.find_spec(fullname, path) if scope is not None else None

    @staticmethod
    def invalidate_caches() -> None:
        """Nothing cached here (PathFinder keeps the folder listings)."""


def _install() -> None:
    if LibraryFinder not in sys.meta_path:
        sys.meta_path.insert(0, LibraryFinder)
