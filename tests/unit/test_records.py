import resource

from sluice.records import Record, compact_json, join_lines


def test_records_from_mappings_hold_only_their_own_bytes() -> None:
    records = [Record.from_data({"n": i, "text": "abc"}) for i in range(20_000)]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    more = [Record.from_data({"n": i, "text": "abc"}) for i in range(50_000)]
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 50_000  # ~4 KiB a record without the trim: ~200 MiB
    assert records[5].raw == b'{"n":5,"text":"abc"}'
    assert more[-1].data == {"n": 49_999, "text": "abc"}


def test_compact_json_is_the_same_text() -> None:
    assert compact_json({"a": [1, 2]}) == b'{"a":[1,2]}'


def test_join_lines_ends_every_line() -> None:
    assert join_lines([Record(b"{}"), Record(b'{"a":1}')]) == b'{}\n{"a":1}\n'


def test_data_is_decoded_once_and_non_objects_are_wrapped() -> None:
    record = Record(b"[1,2]")
    assert record.data == {"value": [1, 2]}
    assert record.data is record.data
