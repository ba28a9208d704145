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


# -- issue 12, item 16 -------------------------------------------------------------------------


def _corrupt_demo(directory: Path) -> Path:
    main(["journal", "demo", str(directory)])
    segment = sorted(directory.glob("*.wal"))[0]
    data = bytearray(segment.read_bytes())
    data[100] ^= 1
    segment.write_bytes(bytes(data))
    return segment


@pytest.mark.parametrize("as_json", [False, True])
def test_dump_exits_non_zero_on_a_corrupt_journal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], as_json: bool
) -> None:
    segment = _corrupt_demo(tmp_path)
    capsys.readouterr()
    assert main(["journal", "dump", str(tmp_path), *(["--json"] if as_json else [])]) == 1
    captured = capsys.readouterr()
    if as_json:
        assert json.loads(captured.out)["journals"][0]["error_path"] == str(segment)
    assert "writebehind recover --config <its config> --repair" in captured.err


def test_check_says_the_next_step_on_corruption(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _corrupt_demo(tmp_path)
    capsys.readouterr()
    assert main(["journal", "check", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "next step: stop the cache, then run `writebehind recover --config <its config> " \
        "--repair`" in out
    assert ".corrupt-<offset>" in out


def test_dump_limit_and_key_select_records(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["journal", "demo", str(tmp_path)])
    capsys.readouterr()
    assert main(["journal", "dump", str(tmp_path), "--key", "user:3", "--limit", "3"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert len(rows) == 3 and all("user:3 " in row for row in rows)
    assert "… 5 more records (--limit 3)" in out
    assert main(["journal", "dump", str(tmp_path), "--json", "--key", "user:3",
                 "--limit", "2"]) == 0
    journal = json.loads(capsys.readouterr().out)["journals"][0]
    assert [r["key"] for r in journal["records"]] == ["user:3", "user:3"]
    assert journal["records_matching"] == 8
    assert main(["journal", "dump", str(tmp_path), "--key", "nobody"]) == 0
    assert "no records of key 'nobody'" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["journal", "dump", str(tmp_path), "--limit", "-1"])


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"writebehind {version('writebehind')}"
