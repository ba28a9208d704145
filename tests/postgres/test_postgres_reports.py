"""Store passwords never reach a chaos run's output: stdout, JSON or JUnit (issue 12, item 12)."""

from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from writebehind._cli import main

pytestmark = pytest.mark.postgres


def _with_password(url: str, password: str) -> str:
    parts = urlsplit(url)
    user = parts.username or "postgres"
    host = parts.hostname or "127.0.0.1"
    netloc = f"{user}:{password}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def test_a_store_password_is_masked_in_stdout_json_and_junit(
    tmp_path: Path, pg_url: str, pg_table: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # The local server trusts every connection, so the password is sent and ignored.
    store = _with_password(pg_url, "secret")
    config = tmp_path / "chaos.toml"
    config.write_text(f'store_table = "{pg_table}"\n')
    out_json, out_xml = tmp_path / "chaos.json", tmp_path / "chaos.xml"
    # A deliberately broken worker fails its kill run, so stdout prints a replay command too.
    code = main(["chaos", "run", "--seed", "3", "--duration", "1", "--kills", "1",
                 "--ack", "fsync", "--store", store, "--config", str(config),
                 "--json", str(out_json), "--junit", str(out_xml), "--break", "drop-writes"])
    captured = capsys.readouterr()
    assert code == 1, captured.out
    assert "--store" in out_json.read_text() and "--store" in out_xml.read_text()
    assert ":***@" in captured.out
    for where, text in (("stdout", captured.out), ("stderr", captured.err),
                        ("JSON", out_json.read_text()), ("JUnit", out_xml.read_text())):
        assert "secret" not in text, f"the store password leaked into {where}"
