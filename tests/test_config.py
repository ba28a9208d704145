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
