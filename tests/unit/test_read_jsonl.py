"""Reading a JSON-lines file for `proj submit`: every line that cannot be an item is refused
by line number, and the rest are kept; nothing raises."""

from __future__ import annotations

from pathlib import Path

from proj.batch.cli import MAX_LINE_BYTES, _shown, read_jsonl


def test_bad_lines_are_refused_by_line_number_and_the_rest_kept(tmp_path: Path) -> None:
    f = tmp_path / "items.jsonl"
    lines = [
        b'{"domain": "a.com"}',
        b'{"domain": "b\\xff.com"}'.replace(b"\\xff", b"\xff"),  # not UTF-8
        b"[" * 100_000 + b"]" * 100_000,  # nested too deeply
        b'{"n": ' + b"9" * 5000 + b"}",  # an integer of 5,000 digits
        b'{"x": "' + b"y" * (MAX_LINE_BYTES + 10) + b'"}',  # over the line limit
        b"",
        b"{not json",
        b'{"domain": "c.com"}',
    ]
    f.write_bytes(b"\n".join(lines) + b"\n")
    items, bad = read_jsonl(f)
    assert items == [(1, {"domain": "a.com"}), (8, {"domain": "c.com"})]
    assert bad[0].startswith("line 2: not UTF-8 (byte 0xff")
    assert bad[1] == "line 3: nested too deeply"
    assert bad[2].startswith("line 4: a value out of range")
    assert bad[3] == "line 5: longer than 1024 KiB"
    assert bad[4].startswith("line 7: not JSON")


def test_values_in_messages_are_cut_and_not_markup() -> None:
    assert len(_shown("z" * 10_000)) < 260
    assert "\\[red]" in _shown("[red]boom")
