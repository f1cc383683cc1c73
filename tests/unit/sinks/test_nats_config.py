"""The ``nats`` sink's and source's config: bad values exit with the key, the line and what is
wrong (table-driven), no secret is echoed, and the subject template's pieces."""

from __future__ import annotations

import pytest

from sluice.config import ConfigError, load_config_text
from sluice.registry import Registry
from sluice.sinks.nats.config import NatsSinkConfig, parse_subject

SINK = """\
sources:
  gen: {type: generator, count: 1}
sinks:
  log:
    type: nats
    inputs: [gen]
    servers: [nats://127.0.0.1:4222]
    stream: S
"""

SOURCE = """\
sinks:
  out: {type: stdout, inputs: [log]}
sources:
  log:
    type: nats
    servers: [nats://127.0.0.1:4222]
    stream: S
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            SINK + "    subject: a.{product_id\n",
            "line 9: sinks.log.subject: 'a.{product_id': expected '}'",
        ),
        (SINK + "    subject: a..b\n", "is not a subject to publish to"),
        (SINK + "    subject: a.*\n", "is not a subject to publish to"),
        (SINK + "    subject: a.{x.y}\n", "is not a record field name"),
        (SINK + "    subject: a.{x:>10}\n", "is not a record field name"),
        (SINK + "    subject: a\n    msg_id: []\n", "name at least one field"),
        (
            SINK.replace("nats://127.0.0.1:4222", "nats://u:hunter2@127.0.0.1:4222")
            + "    subject: a\n",
            "put no credentials in a server URL",
        ),
        (SINK.replace("nats://", "http://") + "    subject: a\n", "nats:// or tls://"),
        (SINK.replace("stream: S", "stream: a.b") + "    subject: a\n", "a stream name"),
        (SINK + "    subject: a\n    user: u\n", "give both user and password"),
        (
            SINK + "    subject: a\n    token: t0ken\n    user: u\n    password: hunter2\n",
            "use one of user/password, token and credentials_file",
        ),
        (SINK + "    subject: a\n    create_stream: {replicas: 7}\n", "replicas"),
        (SOURCE, "line 4: sources.log.durable: missing required key"),
        (SOURCE + "    durable: a.b\n", "a durable name"),
        (
            SOURCE + "    durable: d\n    ack_wait_secs: 2\n    progress_interval_secs: 3\n",
            "progress_interval_secs must be shorter than ack_wait_secs",
        ),
    ],
)
def test_nats_config_problems(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config_text(text, Registry.from_entry_points())
    rendered = caught.value.render()
    assert expected in rendered
    assert "hunter2" not in rendered
    assert "t0ken" not in rendered


def test_a_valid_sink_derives_the_stream_subjects_from_the_template() -> None:
    loaded = load_config_text(
        SINK + "    subject: coinbase.{product_id}\n    msg_id: [product_id, trade_id]\n"
        "    create_stream: {replicas: 3}\n    password: ${P}\n    user: u\n",
        Registry.from_entry_points(),
        environ={"P": "hunter2"},
    )
    sink = loaded.model.sinks["log"]
    assert isinstance(sink, NatsSinkConfig)
    assert sink.stream_subjects() == ["coinbase.*"]
    assert sink.password is not None and sink.password.get_secret_value() == "hunter2"
    assert "hunter2" not in repr(sink)


def test_parse_subject_splits_literals_and_fields() -> None:
    assert parse_subject("coinbase.{product_id}.t") == [("coinbase.", "product_id"), (".t", None)]
    assert parse_subject("plain") == [("plain", None)]
