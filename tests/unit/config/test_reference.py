"""The JSON Schema and the config reference are generated from the models and stay usable."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest
import yaml

from sluice.config.reference import builtin_registry, config_json_schema, config_reference_markdown
from sluice.registry import Registry
from tests.conftest import REPO


def test_docs_configuration_md_is_up_to_date() -> None:
    expected = config_reference_markdown(builtin_registry(Registry.from_entry_points()))
    current = (REPO / "docs" / "configuration.md").read_text()
    assert current == expected, (
        "docs/configuration.md is stale: run `sluice schema --format markdown --builtin-only "
        "> docs/configuration.md`"
    )


def example_configs() -> list[Path]:
    return sorted([*REPO.glob("*.yaml"), *(REPO / "examples").glob("*.yaml")])


@pytest.mark.parametrize("path", example_configs(), ids=lambda p: p.name)
def test_shipped_configs_validate_against_the_json_schema(path: Path) -> None:
    schema = config_json_schema(Registry.from_entry_points())
    jsonschema.validate(yaml.safe_load(path.read_text()), schema)


def test_the_schema_rejects_what_the_loader_rejects() -> None:
    schema = config_json_schema(Registry.from_entry_points())
    bad = {
        "sources": {"gen": {"type": "generator", "rate": 5}},
        "sinks": {"out": {"type": "file", "inputs": ["gen"], "path": "x"}},
    }
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
