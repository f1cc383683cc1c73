"""Where plugins are found: the ``sluice.sources`` and ``sluice.sinks`` entry point groups.

Built-in plugins are registered through the same entry points (in sluice's own pyproject) as a
third-party package's, so ``pip install sluice-foo`` makes ``type: foo`` available. A plugin module
is imported only when the registry is loaded, never at sluice's import time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Literal

from sluice.plugin import DELIVERIES, Sink, Source

__all__ = ["PluginLoadError", "Registry"]

Kind = Literal["source", "sink"]
GROUPS: dict[Kind, str] = {"source": "sluice.sources", "sink": "sluice.sinks"}


class PluginLoadError(RuntimeError):
    """A registered plugin could not be imported or is malformed."""


@dataclass
class Registry:
    """The known plugins, by kind and type name."""

    sources: dict[str, type[Source]] = field(default_factory=dict)  # type: ignore[type-arg]
    sinks: dict[str, type[Sink]] = field(default_factory=dict)  # type: ignore[type-arg]
    origins: dict[tuple[Kind, str], str] = field(default_factory=dict)
    """Which distribution provides each plugin (``sluice`` for built-ins)."""

    @classmethod
    def from_entry_points(cls) -> Registry:
        """Load every plugin installed in this environment."""
        registry = cls()
        for kind, group in GROUPS.items():
            for ep in entry_points(group=group):
                try:
                    plugin = ep.load()
                except ImportError as exc:
                    raise PluginLoadError(
                        f"{kind} plugin '{ep.name}' ({ep.value}) failed to import: {exc}"
                    ) from exc
                origin = ep.dist.name if ep.dist is not None else "?"
                registry.register(kind, ep.name, plugin, origin=origin)
        return registry

    def register(self, kind: Kind, name: str, plugin: type, *, origin: str = "local") -> None:
        """Add a plugin; its config model's ``type`` must be ``Literal[name]``, its ``delivery`` one of
        :data:`~sluice.plugin.DELIVERIES`, and a sink declared ``queryable`` must define ``query``
        (``queryable_stopped``: ``query_stopped``)."""
        base = Source if kind == "source" else Sink
        if not (isinstance(plugin, type) and issubclass(plugin, base)):
            raise PluginLoadError(f"{kind} plugin '{name}' is not a subclass of {base.__name__}")
        model = getattr(plugin, "config_model", None)
        type_field = model.model_fields.get("type") if model is not None else None
        if type_field is None or getattr(type_field.annotation, "__args__", None) != (name,):
            raise PluginLoadError(
                f"{kind} plugin '{name}': config_model must declare type: Literal['{name}']"
            )
        if plugin.delivery not in DELIVERIES:
            raise PluginLoadError(
                f"{kind} plugin '{name}': delivery must be one of {', '.join(DELIVERIES)}"
            )
        for flag, method in (("queryable", "query"), ("queryable_stopped", "query_stopped")):
            if getattr(plugin, flag, False) and getattr(plugin, method) is getattr(Sink, method):
                raise PluginLoadError(f"sink plugin '{name}': {flag} is set but {method}() is not")
        table: dict[str, type] = self.sources if kind == "source" else self.sinks
        table[name] = plugin
        self.origins[(kind, name)] = origin
