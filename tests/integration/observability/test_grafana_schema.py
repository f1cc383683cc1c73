"""observability/grafana checked by Grafana's own schema: the models that grafana-foundation-sdk
generates from Grafana's schemas (Grafana itself cannot be installed here). A field the schema does
not know (a typo, a field at the wrong level, a panel option of another panel type) is dropped when
the file is decoded into those models, so every file must come back from decode + encode with all of
its fields and values."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.models.alerting import Rule
from grafana_foundation_sdk.models.dashboard import Dashboard
from test_grafana_pack import ALERT_RULES, DASHBOARD

# the keys of a rule group in Grafana's file provisioning (the SDK models the HTTP API's group)
PROVISIONED_GROUP_KEYS = {"orgId", "name", "folder", "interval", "rules"}


@pytest.fixture(scope="module", autouse=True)
def panel_and_query_models() -> None:
    register_default_plugins()  # typed options and field configs per panel type


def lost_in_round_trip(original: Any, decoded: Any, path: str = "") -> list[str]:
    """Where ``original`` has a field or value that ``decoded`` lacks."""
    if isinstance(original, dict):
        if not isinstance(decoded, dict):
            return [f"{path}: not an object in the schema"]
        out: list[str] = []
        for key, value in original.items():
            if key not in decoded:
                out.append(f"{path}.{key}: not in the schema")
            else:
                out += lost_in_round_trip(value, decoded[key], f"{path}.{key}")
        return out
    if isinstance(original, list):
        if not isinstance(decoded, list) or len(original) != len(decoded):
            return [f"{path}: list changed"]
        return [
            x
            for i, (a, b) in enumerate(zip(original, decoded, strict=True))
            for x in lost_in_round_trip(a, b, f"{path}[{i}]")
        ]
    return [] if original == decoded else [f"{path}: {original!r} became {decoded!r}"]


def round_trip(model: Any, data: dict[str, Any]) -> Any:
    return json.loads(JSONEncoder(sort_keys=True).encode(model.from_json(data)))


def test_the_dashboard_is_valid_for_grafanas_dashboard_schema() -> None:
    board = json.loads(DASHBOARD.read_text())
    assert lost_in_round_trip(board, round_trip(Dashboard, board)) == []


def test_the_check_finds_a_field_the_schema_does_not_know() -> None:
    board = json.loads(DASHBOARD.read_text())
    board["refreshEvery"] = "30s"
    board["panels"][1]["gridpos"] = board["panels"][1].pop("gridPos")
    board["panels"][1]["options"]["legend"]["showLegnd"] = False
    assert sorted(lost_in_round_trip(board, round_trip(Dashboard, board))) == [
        ".panels[1].gridpos: not in the schema",
        ".panels[1].options.legend.showLegnd: not in the schema",
        ".refreshEvery: not in the schema",
    ]


def test_the_alert_rules_are_valid_for_grafanas_alerting_schema() -> None:
    document = yaml.safe_load(ALERT_RULES.read_text())
    assert document["apiVersion"] == 1
    for group in document["groups"]:
        assert set(group) <= PROVISIONED_GROUP_KEYS
        for rule in group["rules"]:
            assert lost_in_round_trip(rule, round_trip(Rule, rule)) == []
