"""The JSON Schema of a config and the Markdown config reference, both generated from the models.

``docs/configuration.md`` is the output of ``sluice schema --format markdown`` with the built-in
plugins; a test fails when the file is stale.
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import BaseModel

from sluice.alerts.config import (
    AlertsConfig,
    ErrorRateRule,
    FreshnessRule,
    MinRateRule,
    WebhookConfig,
)
from sluice.config.loader import build_config_model
from sluice.config.models import (
    AdminConfig,
    BatchPolicy,
    BufferPolicy,
    LogConfig,
    RateLimit,
    RetryPolicy,
    ShutdownConfig,
)
from sluice.registry import Registry

__all__ = ["builtin_registry", "config_json_schema", "config_reference_markdown"]


def builtin_registry(registry: Registry) -> Registry:
    """Only the plugins that ship with sluice (for the reference in the docs)."""
    builtin = Registry()
    for (kind, name), origin in registry.origins.items():
        if origin == "sluice":
            plugin = registry.sources[name] if kind == "source" else registry.sinks[name]
            builtin.register(kind, name, plugin, origin=origin)
    return builtin


_SHARED_BLOCKS: list[tuple[str, type[BaseModel]]] = [
    ("batch", BatchPolicy),
    ("buffer", BufferPolicy),
    ("retry", RetryPolicy),
    ("rate_limit", RateLimit),
    ("log", LogConfig),
    ("admin", AdminConfig),
    ("shutdown", ShutdownConfig),
]
_ALERT_BLOCKS: list[tuple[str, type[BaseModel]]] = [
    ("rule `type: freshness`", FreshnessRule),
    ("rule `type: min_rate`", MinRateRule),
    ("rule `type: error_rate`", ErrorRateRule),
    ("`webhook`", WebhookConfig),
]
_SKIP_IN_PLUGINS = {"type", "inputs", "batch", "buffer", "retry", "rate_limit"}


def config_json_schema(registry: Registry) -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of a whole config for the installed plugins."""
    schema = build_config_model(registry).model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "sluice pipeline config"
    return schema


def _type_text(prop: dict[str, Any]) -> str:
    if "const" in prop:
        return f"`{prop['const']}`"
    if "enum" in prop:
        return " \\| ".join(f"`{v}`" for v in prop["enum"])
    if "$ref" in prop:
        return str(prop["$ref"]).rsplit("/", 1)[-1]
    if "oneOf" in prop:
        return "one of the plugin types below"
    if "anyOf" in prop:
        parts = [_type_text(p) for p in prop["anyOf"] if p.get("type") != "null"]
        nullable = any(p.get("type") == "null" for p in prop["anyOf"])
        if any("$ref" in p or "oneOf" in p for p in prop["anyOf"]) and len(parts) > 1:
            parts = ["a sink's config (see below)"]
        return " \\| ".join(parts) + (" (optional)" if nullable else "")
    kind = prop.get("type", "any")
    if kind == "array":
        return f"list of {_type_text(prop.get('items', {}))}"
    if kind == "object":
        extra = prop.get("additionalProperties")
        patterns = prop.get("patternProperties")
        if isinstance(patterns, dict) and patterns:
            extra = next(iter(patterns.values()))
        if isinstance(extra, dict):
            inner = (
                "a plugin's config (see below)"
                if "oneOf" in extra or "$ref" in extra
                else _type_text(extra)
            )
            return f"map of id to {inner}"
        return "object"
    if prop.get("format") == "password":
        return "secret string"
    if prop.get("format") == "path":
        return "path"
    return str(kind)


def _default_text(model: type[BaseModel], name: str) -> str:
    info = model.model_fields[name]
    if info.is_required():
        return "**required**"
    if info.default_factory is not None:
        made = info.get_default(call_default_factory=True)
        if isinstance(made, BaseModel):
            return "see below"
        return f"`{orjson.dumps(made, default=str).decode()}`"
    value = info.default
    if value is None:
        return "unset"
    if isinstance(value, BaseModel):
        return "see below"
    return f"`{orjson.dumps(value, default=str).decode()}`"


def _table(model: type[BaseModel], skip: set[str] = frozenset()) -> list[str]:  # type: ignore[assignment]
    props = model.model_json_schema()["properties"]
    lines = ["| key | type | default | description |", "|---|---|---|---|"]
    for name, info in model.model_fields.items():
        if name in skip:
            continue
        description = (info.description or "").replace("\n", " ").replace("|", "\\|")
        prop = props.get(name, {})
        lines.append(
            f"| `{name}` | {_type_text(prop)} | {_default_text(model, name)} | {description} |"
        )
    return lines


def _overridden_defaults(model: type[BaseModel]) -> list[str]:
    notes = []
    for block in ("batch", "buffer", "retry"):
        info = model.model_fields.get(block)
        if info is None or info.default_factory is None:
            continue
        value = info.get_default(call_default_factory=True)
        base = type(value)()
        changed = {k: v for k, v in value.model_dump().items() if getattr(base, k) != v}
        if changed:
            text = ", ".join(f"`{k}: {v}`" for k, v in changed.items())
            notes.append(f"Defaults that differ for this sink: `{block}` {text}.")
    return notes


def config_reference_markdown(registry: Registry) -> str:
    """The config reference as Markdown."""
    model = build_config_model(registry)
    out: list[str] = [
        "# Configuration reference",
        "",
        "<!-- Generated by `sluice schema --format markdown --builtin-only`; do not edit by hand. -->",
        "",
        "A config is one YAML file. Values may use `${VAR}`, `${VAR:-default}` and "
        "`${VAR:?message}` from the environment (`$$` is a literal `$`). Unknown keys are errors. "
        "`sluice check CONFIG` validates a file; `sluice schema` prints the JSON Schema for editors.",
        "",
        "## Top level",
        "",
        *_table(model),
        "",
        "## Blocks shared by components",
        "",
        "Every sink has `inputs`, `batch`, `buffer` and `retry`; every source and sink may have "
        "`rate_limit`. A sink may change the defaults (noted under it).",
    ]
    for name, block in _SHARED_BLOCKS:
        out += ["", f"### `{name}`", "", (block.__doc__ or "").strip(), "", *_table(block)]
    out += ["", "## Alerts", "", (AlertsConfig.__doc__ or "").strip(), "", *_table(AlertsConfig)]
    for name, block in _ALERT_BLOCKS:
        out += ["", f"### {name}", "", " ".join((block.__doc__ or "").split()), "", *_table(block)]
    for kind, plugins in (("Sources", registry.sources), ("Sinks", registry.sinks)):
        out += ["", f"## {kind}"]
        for name in sorted(plugins):
            plugin = plugins[name]
            config_model = plugin.config_model
            out += [
                "",
                f"### `{name}`",
                "",
                plugin.description,
                "",
                *_table(config_model, _SKIP_IN_PLUGINS),
            ]
            notes = _overridden_defaults(config_model)
            if notes:
                out += ["", *notes]
    return "\n".join(out) + "\n"
