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


def test_the_schema_allows_x_keys_and_merge_keys() -> None:
    schema = config_json_schema(Registry.from_entry_points())
    text = (
        "x-file: &f {type: file, inputs: [gen]}\n"
        "sources: {gen: {type: generator}}\n"
        "sinks: {a: {<<: *f, path: a.jsonl}, b: {<<: *f, path: b.jsonl}}\n"
    )
    jsonschema.validate(yaml.safe_load(text), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(yaml.safe_load(text.replace("x-file", "y-file")), schema)


def test_the_yaml_example_in_the_reference_loads_with_its_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sluice.config import load_config_text

    monkeypatch.chdir(tmp_path)
    doc = (REPO / "docs" / "configuration.md").read_text()
    example = doc.split("```yaml\n", 1)[1].split("```", 1)[0]
    loaded = load_config_text(
        example + "sources: {gen: {type: generator}}\n", Registry.from_entry_points()
    )
    sinks = loaded.model.sinks
    assert (str(sinks["raw"].path), sinks["raw"].fsync) == ("raw.jsonl", True)
    assert (str(sinks["copy"].path), sinks["copy"].fsync) == ("copy.jsonl", False)
