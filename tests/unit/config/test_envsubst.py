import pytest

from sluice.config.envsubst import EnvError, expand

ENV = {"HOST": "db.local", "EMPTY": "", "PORT": "8123"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("http://${HOST}:${PORT}", "http://db.local:8123"),
        ("${MISSING:-fallback}", "fallback"),
        ("${EMPTY:-fallback}", "fallback"),
        ("${HOST:-fallback}", "db.local"),
        ("${HOST:?needed}", "db.local"),
        ("cost: $$5", "cost: $5"),
        ("$$${HOST}", "$db.local"),
        ("plain $ sign", "plain $ sign"),
        ("${MISSING:-}", ""),
    ],
)
def test_expands_references(text: str, expected: str) -> None:
    assert expand(text, ENV) == expected


def test_undefined_variable_is_an_error_naming_it() -> None:
    with pytest.raises(EnvError, match="MISSING is not set"):
        expand("${MISSING}", ENV)


def test_required_variable_message_is_shown() -> None:
    with pytest.raises(EnvError, match="EMPTY: set the password"):
        expand("${EMPTY:?set the password}", ENV)


def test_malformed_reference_is_an_error() -> None:
    with pytest.raises(EnvError, match="malformed"):
        expand("${not valid}", ENV)


def test_expansion_is_bounded() -> None:
    environ = {"BIG": "x" * 1000}
    assert len(expand("${BIG}" * 10, environ, max_chars=10_000)) == 10_000
    with pytest.raises(EnvError, match="more than 10000 characters"):
        expand("${BIG}" * 11, environ, max_chars=10_000)
