"""The recorded frames ship inside the package with their licence notice beside them."""

from __future__ import annotations

from importlib import resources

from sluice.simulator.markets import RECORDING, load_recording


def test_the_recording_and_its_notice_are_package_data() -> None:
    data = resources.files("sluice.simulator").joinpath("data")
    assert data.joinpath(RECORDING).is_file()
    notice = data.joinpath("README.md").read_text(encoding="utf-8")
    assert "Bryant Moscon" in notice
    assert "XFree86 1.1" in notice


def test_the_recording_holds_ten_products_with_their_snapshots() -> None:
    recording = load_recording()
    assert len(recording.products) == 10
    assert set(recording.initial_tickers) == set(recording.products)
    assert set(recording.initial_matches) == set(recording.products)
    tickers = [e for e in recording.events if e.channel == "ticker"]
    matches = [e for e in recording.events if e.channel == "matches"]
    assert len(tickers) + len(recording.initial_tickers) == 107
    assert len(matches) == 97
    assert 25 < recording.duration < 40
