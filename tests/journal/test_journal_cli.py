"""``writebehind journal dump|check|demo`` through the real CLI entry point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from writebehind._cli import main


def test_demo_writes_a_journal_with_a_torn_tail_and_dumps_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["journal", "demo", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    assert "persisted <= 100" in out and "torn tail: " in out and "DELETE" in out
    assert len(list((tmp_path / "demo").glob("*.wal"))) >= 2


def test_dump_json_and_check_accept_a_parent_of_shard_directories(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for shard in ("shard-0000", "shard-0001"):
        assert main(["journal", "demo", str(tmp_path / shard)]) == 0
    capsys.readouterr()
    assert main(["journal", "dump", str(tmp_path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [Path(j["directory"]).name for j in doc["journals"]] == ["shard-0000", "shard-0001"]
    first = doc["journals"][0]
    assert first["persisted_seq"] == 100 and first["torn_tail"]["length"] > 0
    assert first["records"][0] == {"seq": 1, "kind": "PUT", "key": "user:0", "version": 1,
                                   "value_b64": "djB2MHYwdjA=", "persisted": True}
    assert main(["journal", "check", str(tmp_path)]) == 0
    assert capsys.readouterr().out.count("ok, 200 dirty records") == 2


def test_check_reports_corruption_with_file_and_offset_and_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["journal", "demo", str(tmp_path)])
    segment = sorted(tmp_path.glob("*.wal"))[0]
    data = bytearray(segment.read_bytes())
    data[100] ^= 1
    segment.write_bytes(bytes(data))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    capsys.readouterr()
    assert main(["journal", "check", str(tmp_path)]) == 1
    assert f"corrupt: {segment}: offset " in capsys.readouterr().out
    assert main(["journal", "dump", str(tmp_path)]) == 1
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_empty_directory_is_not_a_journal(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["journal", "check", str(tmp_path)]) == 2
    assert "no journal segments" in capsys.readouterr().err
