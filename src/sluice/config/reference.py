"""The JSON Schema of a config and the Markdown config reference, both generated from the models.

``docs/configuration.md`` is the output of ``sluice schema --format markdown`` with the built-in
plugins; a test fails when the file is stale.
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import BaseModel

from sluice.config.alerts import (
    AlertsConfig,
    ErrorRateRule,
    FreshnessRule,
    MinRateRule,
    WebhookConfig,
)
from sluice.config.assembly import build_config_model
from sluice.config.envsubst import MAX_EXPANDED_CHARS
from sluice.config.models import (
    AdminConfig,
    BatchPolicy,
    BufferPolicy,
    LogConfig,
    RateLimit,
    RetryPolicy,
    ShutdownConfig,
)
from sluice.config.source_map import IGNORED_PREFIX, MAX_DEPTH, MAX_NODES, MAX_TEXT_CHARS
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
    # top-level `x-` keys are not read: a place for YAML anchors
    schema["patternProperties"] = {f"^{IGNORED_PREFIX}": {}}
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


def _yaml_section() -> list[str]:
    """Hand-written: anchors, merge keys, `x-` keys, the bounds on aliases and expansion, and the
    local paths checked (the numbers come from the code that enforces them)."""
    return [
        "## YAML: anchors, merge keys, `x-` keys and limits",
        "",
        "Anchors (`&name`), aliases (`*name`) and merge keys work as YAML 1.1 defines them: "
        "`<<: *defaults` brings in the keys of the mapping named, `<<: [*a, *b]` those of several "
        "(the first that has a key wins), and the mapping's own keys always win over merged ones. "
        "Top-level keys starting with `x-` are not read, which makes them a home for anchors "
        "(as in Docker Compose); the JSON Schema allows them. A problem in a merged key is "
        "reported at the line where the key is written, in the anchored mapping.",
        "",
        "```yaml",
        "x-file: &file_defaults",
        "  type: file",
        "  inputs: [gen]",
        "  fsync: true",
        "sinks:",
        "  raw: {<<: *file_defaults, path: raw.jsonl}",
        "  copy:",
        "    <<: *file_defaults",
        "    path: copy.jsonl",
        "    fsync: false        # overrides the merged value",
        "```",
        "",
        "Keys are text: an unquoted key that YAML reads as something else (`1:`, `true:`, `null:`, "
        "`2024-01-01:`) is an error naming it; quote it (`'1':`). A config that would take a "
        "long time or much memory to read is refused with its line, before it is expanded: "
        f"a recursive alias, nesting deeper than {MAX_DEPTH} levels, more than {MAX_NODES:,} "
        'values once aliases are expanded (an "alias bomb"), more than '
        f"{MAX_TEXT_CHARS // (1024 * 1024)} MiB of text once aliases and variables are expanded, "
        f"or one value growing past {MAX_EXPANDED_CHARS // (1024 * 1024)} MiB through `${{VAR}}`.",
        "",
        "Local paths are checked against the filesystem by `sluice check` and again by "
        "`sluice run` before anything starts: `data_dir` must be a directory or creatable as one, "
        "a `file` sink's `path` (and the default dead-letter file, `<data_dir>/dead_letters.jsonl`)"
        " a file or creatable as one (no directory in its place, no file where a parent directory "
        "should be, permission to create it); each failure exits 2 naming the key and its line. "
        "What changes after the check is met at run time: a sink that cannot open its file for a "
        "reason waiting cannot cure (EISDIR, ENOTDIR, EACCES, EPERM, EROFS, ELOOP, ENAMETOOLONG) is "
        "marked broken: one `sink.broken` error line naming the path and the errno, `/readyz` "
        "reports it, and every batch for it goes to the dead letters with that reason instead of "
        "being retried, so nothing is lost; if the dead-letter sink itself is broken the run "
        "stops with exit 1. Errors that can heal (a full disk, an I/O error) are retried.",
    ]


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
        *_yaml_section(),
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
                f"Delivery: **{plugin.delivery}**."
                + (f" {plugin.delivery_note}" if plugin.delivery_note else ""),
                "",
                *_table(config_model, _SKIP_IN_PLUGINS),
            ]
            notes = _overridden_defaults(config_model)
            if notes:
                out += ["", *notes]
    return "\n".join(out) + "\n"
