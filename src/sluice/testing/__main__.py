"""``python -m sluice.testing run CONFIG [--log-format text|json]``: ``sluice run`` with the test
doubles registered too. Only this entry point imports the CLI; ``import sluice.testing`` does not."""

from __future__ import annotations

import sys

from sluice.testing.doubles import registry_with_doubles


def _main(argv: list[str]) -> int:
    from sluice.cli.run_commands import run_pipeline
    from sluice.config import ConfigError, load_config

    if len(argv) < 2 or argv[0] != "run":
        print(
            "usage: python -m sluice.testing run CONFIG [--log-format text|json]", file=sys.stderr
        )
        return 2
    registry = registry_with_doubles()
    try:
        loaded = load_config(argv[1], registry)
    except ConfigError as exc:
        print(f"error: {exc.render()}", file=sys.stderr)
        return 2
    log_format = argv[3] if len(argv) >= 4 and argv[2] == "--log-format" else None
    return run_pipeline(loaded, registry, log_format)


if __name__ == "__main__":  # pragma: no cover - exercised through subprocess tests
    raise SystemExit(_main(sys.argv[1:]))
