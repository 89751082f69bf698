"""One small registry type for every extension point: stages, backends, model sources, data loaders, transforms.

Why one type: before, each extension point was a module-level dict filled as a side effect of importing some other
module, so what was registered depended on import order (``load_data("x.csv")`` returned numbers or text depending on
whether ``hf`` had been imported). A :class:`Registry` is created empty by the layer that owns the concept and filled
explicitly by its own package's ``__init__``; third-party packages add entries through an entry-point group
(``modelpress.stages``, ``modelpress.backends``, ...) that is read once, lazily, the first time a name is not found or
all names are listed. Lookups of unknown names raise :class:`~modelpress.errors.InputError` with a "did you mean" hint.

Imitates ``torchao/quantization/transform_module.py`` (a dict and a decorator) with entry points for plugins.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar, overload

from .errors import InputError

T = TypeVar("T")


class Registry(Generic[T]):
    """Named entries of one kind.

    Args:
        kind: what an entry is, for messages ("stage", "backend", "model source").
        entry_points: the entry-point group third-party packages use to add entries (``None``: no plugins). An entry
            point's value is loaded and called with this registry (``def register(registry): registry.add(...)``).
    """

    def __init__(self, kind: str, *, entry_points: str | None = None) -> None:
        self.kind = kind
        self.entry_points = entry_points
        self._entries: dict[str, T] = {}
        self._plugins_loaded = entry_points is None

    # -- filling --
    def add(self, name: str, value: T, *, replace: bool = False) -> T:
        """Register ``value`` under ``name``; a second registration of a name is an error unless ``replace``."""
        if not name or not isinstance(name, str):
            raise TypeError(f"{self.kind} name must be a non-empty string, got {name!r}")
        if name in self._entries and not replace and self._entries[name] is not value:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = value
        return value

    @overload
    def register(self, name: str) -> Callable[[T], T]: ...
    @overload
    def register(self, name: str, value: T) -> T: ...

    def register(self, name: str, value: T | None = None) -> T | Callable[[T], T]:
        """``registry.register("x", obj)`` or as a decorator ``@registry.register("x")``."""
        if value is not None:
            return self.add(name, value)

        def decorate(obj: T) -> T:
            return self.add(name, obj)

        return decorate

    def pop(self, name: str, default: T | None = None) -> T | None:
        """Remove and return an entry (tests that register a temporary entry undo it with this)."""
        return self._entries.pop(name, default)

    # -- reading --
    def get(self, name: str) -> T:
        """The entry named ``name``; an unknown name is an InputError (exit 2) naming the closest one."""
        if name not in self._entries:
            self.load_plugins()
        if name not in self._entries:
            close = difflib.get_close_matches(str(name), list(self._entries), n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(self.names()) or 'none'}"
            raise InputError(f"unknown {self.kind} {name!r}", hint=hint)
        return self._entries[name]

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def find(self, name: str) -> T | None:
        """The entry or ``None`` (no error): for callers that try several registries in turn."""
        if name not in self._entries:
            self.load_plugins()
        return self._entries.get(name)

    def names(self) -> tuple[str, ...]:
        self.load_plugins()
        return tuple(self._entries)

    def items(self) -> tuple[tuple[str, T], ...]:
        self.load_plugins()
        return tuple(self._entries.items())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.find(name) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {list(self._entries)})"

    # -- plugins --
    def load_plugins(self) -> None:
        """Load the entry-point group once. A plugin that fails to import is an InputError naming it."""
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        from importlib import metadata

        for point in metadata.entry_points(group=str(self.entry_points)):
            try:
                hook = point.load()
                hook(self)
            except Exception as exc:  # a third party's bug is reported as the plugin's, with its name
                raise InputError(f"{self.kind} plugin {point.name!r} ({point.value}) failed to load: "
                                 f"{type(exc).__name__}: {exc}") from None
