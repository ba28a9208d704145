"""Configuration: validation names the field and the bad value; TOML; declared requirements."""

from pathlib import Path

import pytest

from writebehind import Config, ConfigError


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"ack": "sometimes"},
            "Config.ack must be one of 'memory', 'journal', 'fsync', 'store', got 'sometimes'",
        ),
        ({"shards": 0}, "Config.shards must be a positive integer, got 0"),
        ({"flush_interval": -1}, "Config.flush_interval must be a positive number, got -1"),
        ({"store": "mysql://x"}, "Config.store must be a URL like"),
        (
            {"retry_initial": 2.0, "retry_max": 1.0},
            "Config.retry_max (1.0) must be >= Config.retry_initial (2.0)",
        ),
        ({"requires": ["telepathy"]}, "Config.requires names an unknown requirement 'telepathy'"),
    ],
)
def test_bad_values_name_the_field_and_the_value(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        Config(**kwargs)  # type: ignore[arg-type]
    assert message in str(info.value)


def test_a_config_that_cannot_honour_what_it_declares_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"requires='durable-dirty-log'.*ack='memory'.*crash"):
        Config(ack="memory", requires=["durable-dirty-log"])
    with pytest.raises(ConfigError, match="power loss"):
        Config(ack="journal", requires=["power-loss-durable"])
    card = ["durable-dirty-log", "replay-on-restart", "alert-on-flush-failure"]
    assert Config(ack="fsync", requires=card).requires == tuple(card)


def test_from_toml_reads_the_seed_policy_card_and_resolves_paths(tmp_path: Path) -> None:
    path = tmp_path / "writebehind.toml"
    path.write_text(
        '[writebehind]\nstore = "sqlite:///data/store.db"\njournal_dir = "data/journal"\n'
        'ack = "fsync"\nflush_interval_ms = 500\nbatch_size = 100\n'
        'requires = ["durable-dirty-log", "replay-on-restart", "alert-on-flush-failure"]\n'
    )
    cfg = Config.from_toml(path)
    assert cfg.flush_interval == 0.5 and cfg.batch_size == 100
    assert cfg.journal_dir == tmp_path / "data" / "journal"
    assert cfg.store == f"sqlite:///{tmp_path}/data/store.db"
    assert cfg.requires == ("durable-dirty-log", "replay-on-restart", "alert-on-flush-failure")


def test_from_toml_names_unknown_settings(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('flush_intervall = 3\n')
    with pytest.raises(ConfigError, match=r"unknown setting.*flush_intervall"):
        Config.from_toml(path)


def test_from_toml_missing_or_broken_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        Config.from_toml(tmp_path / "nope.toml")
    (tmp_path / "bad.toml").write_text("ack = ")
    with pytest.raises(ConfigError, match="not valid TOML"):
        Config.from_toml(tmp_path / "bad.toml")


@pytest.mark.parametrize(
    "example", sorted((Path(__file__).parent.parent / "specs" / "examples").glob("*.toml"))
)
def test_every_example_configuration_loads(example: Path) -> None:
    config = Config.from_toml(example)
    assert config.journal_dir.parent.parent == example.parent


# -- every field is type-checked (issue 12, item 5) --------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        # Any non-empty string is truthy: "false" must not turn destructive repair on.
        ({"repair_journal": "false"}, "Config.repair_journal must be True or False, got 'false'"),
        ({"repair_journal": 0}, "Config.repair_journal must be True or False, got 0"),
        ({"drain_timeout": float("nan")}, "Config.drain_timeout must be a positive number, got na"),
        ({"flush_interval": float("nan")}, "Config.flush_interval must be a positive number"),
        ({"flush_interval": float("inf")}, "Config.flush_interval must be a finite number, got i"),
        ({"retry_max": float("inf")}, "Config.retry_max must be a finite number"),
        ({"flush_interval": "0.5"}, "Config.flush_interval must be a positive number, got '0.5'"),
        ({"shards": 2.0}, "Config.shards must be a positive integer, got 2.0"),
        ({"batch_size": True}, "Config.batch_size must be a positive integer, got True"),
        ({"seed": "7"}, "Config.seed must be an integer or None, got '7'"),
        ({"seed": False}, "Config.seed must be an integer or None, got False"),
        ({"store_table": 5}, "Config.store_table must be a table name (str), got 5"),
        ({"journal_dir": 5}, "Config.journal_dir must be a path (str or pathlib.Path), got 5"),
        ({"inspector": 8765}, "Config.inspector must be 'HOST:PORT' or None, got 8765"),
        ({"inspector_token": 1234}, "Config.inspector_token must be a string or None, got 1234"),
        ({"on_alert": "print"}, "Config.on_alert must be a callable or None, got 'print'"),
        ({"segment_bytes": 100}, "Config.segment_bytes must be at least 4096, got 100"),
        (
            {"max_value_bytes": 1 << 30},
            "Config.max_value_bytes (1073741824) plus Config.max_key_bytes (1024) must fit in "
            "one journal record",
        ),
    ],
)
def test_every_field_is_type_checked(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        Config(**kwargs)  # type: ignore[arg-type]
    assert message in str(info.value)


def test_infinity_is_accepted_where_it_means_no_limit() -> None:
    config = Config(drain_timeout=float("inf"), max_dirty_age=float("inf"))
    assert config.drain_timeout == config.max_dirty_age == float("inf")
    with pytest.raises(ConfigError, match="positive number, got nan"):
        Config(max_dirty_age=float("nan"))


def test_a_misspelt_keyword_names_the_close_matches() -> None:
    with pytest.raises(ConfigError) as info:
        Config(flush_intervall=3)  # type: ignore[call-arg]
    message = str(info.value)
    assert "unknown setting(s) flush_intervall (did you mean flush_interval" in message
    assert "known: ack, batch_size" in message


def test_toml_errors_name_the_file_the_field_and_the_value(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('repair_journal = "false"\n')
    with pytest.raises(ConfigError) as info:
        Config.from_toml(path)
    assert str(info.value) == (
        f"{path}: Config.repair_journal must be True or False, got 'false' (str)"
    )
    path.write_text("drain_timeout = nan\n")
    with pytest.raises(ConfigError, match=rf"^{path}: Config.drain_timeout .* got nan"):
        Config.from_toml(path)
    path.write_text('flush_interval_ms = "500"\n')
    with pytest.raises(ConfigError, match="flush_interval_ms must be a number of milliseconds"):
        Config.from_toml(path)
    path.write_text("batch_sise = 3\n")
    with pytest.raises(ConfigError, match=r"batch_sise \(did you mean batch_size\?\)"):
        Config.from_toml(path)
    # a real TOML boolean still works
    path.write_text("repair_journal = true\n")
    assert Config.from_toml(path).repair_journal is True


def test_cache_machine_overrides_are_checked_with_close_matches() -> None:
    pytest.importorskip("hypothesis")
    from writebehind.harness import CacheMachine

    class Typo(CacheMachine):
        config_overrides = {"batch_sise": 2}  # noqa: RUF012

    with pytest.raises(ConfigError) as info:
        Typo()
    assert str(info.value).startswith(
        "Typo.config_overrides: unknown setting(s) batch_sise (did you mean batch_size?)"
    )


def test_max_key_bytes_is_bounded_by_what_postgresql_can_index() -> None:
    # Issue 12, item 3: a longer key would be acknowledged, then refused by the index forever.
    with pytest.raises(ConfigError, match=r"Config.max_key_bytes=100000 is over what the "
                       r"PostgreSQL store can index \(2000 bytes"):
        Config(store="postgresql://app@db/app", max_key_bytes=100_000)
    assert Config(store="postgresql://app@db/app", max_key_bytes=2000).max_key_bytes == 2000
    assert Config(store="sqlite:///s.db", max_key_bytes=100_000).max_key_bytes == 100_000


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://app:s3cret@db:5432/cache", "postgresql://app:***@db:5432/cache"),
        ("postgresql://app:p@ss@db/x", "postgresql://app:***@db/x"),
        ("postgresql://:pw@db/x", "postgresql://:***@db/x"),
        ("postgresql://db/x?user=a&password=hunter2&sslmode=require",
         "postgresql://db/x?user=a&password=***&sslmode=require"),
        ("postgresql://app@db/x", "postgresql://app@db/x"),
        ("sqlite:///data/a:b@c.db", "sqlite:///data/a:b@c.db"),
    ],
)
def test_a_store_url_shows_no_password(url: str, masked: str) -> None:
    from writebehind._core._config import mask_url

    assert mask_url(url) == masked
    assert masked in repr(Config(store=url))
