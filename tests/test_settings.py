from pathlib import Path

import pytest

from live.settings import Settings, SettingsError


def test_defaults() -> None:
    s = Settings.load(environ={})
    assert (s.host, s.port, s.data_dir, s.redis_url) == ("127.0.0.1", 8080, Path("live-data"), None)
    assert s.base_url == "http://127.0.0.1:8080"


def test_precedence_defaults_toml_env_flags(tmp_path: Path) -> None:
    config = tmp_path / "live.toml"
    config.write_text('port = 7000\nhost = "0.0.0.0"\nlog_level = "debug"\nlog_format = "json"\n')
    env = {"LIVE_PORT": "7100", "LIVE_LOG_LEVEL": "warning"}
    s = Settings.load(flags={"port": 7200, "host": None}, environ=env, config_file=config)
    assert s.port == 7200  # flag beats env beats toml
    assert s.log_level == "warning"  # env beats toml
    assert s.host == "0.0.0.0"  # toml beats default; a None flag is "not given"
    assert s.log_format == "json"


def test_config_file_from_environment(tmp_path: Path) -> None:
    config = tmp_path / "live.toml"
    config.write_text("port = 7001\n")
    assert Settings.load(environ={"LIVE_CONFIG": str(config)}).port == 7001


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"LIVE_PORT": "eighty"}, "LIVE_PORT must be int"),
        ({"LIVE_PORT": "70000"}, "port must be 0..65535"),
        ({"LIVE_REDIS_URL": "http://x"}, "redis_url must start with"),
        ({"LIVE_REDIS_URL": "redis://:6379"}, "needs a host"),
        ({"LIVE_REDIS_URL": "redis://h:port"}, "invalid port"),
        ({"LIVE_LOG_LEVEL": "loud"}, "log_level must be one of"),
        ({"LIVE_JWT_ALGORITHM": "RS256"}, "needs jwt_public_key"),
        ({"LIVE_SECRET": "short"}, "at least 32"),
        ({"LIVE_KEY_PREFIX": "has space"}, "key_prefix"),
    ],
)
def test_bad_values_are_rejected_with_a_clear_message(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.load(environ=env)


def test_toml_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("port = [")
    with pytest.raises(SettingsError, match="not valid TOML"):
        Settings.load(environ={}, config_file=bad)
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("colour = 'red'\n")
    with pytest.raises(SettingsError, match=r"unknown setting .*colour"):
        Settings.load(environ={}, config_file=unknown)
    wrong_type = tmp_path / "wrong.toml"
    wrong_type.write_text("port = true\n")
    with pytest.raises(SettingsError, match="port must be int"):
        Settings.load(environ={}, config_file=wrong_type)
    with pytest.raises(SettingsError, match="cannot read config file"):
        Settings.load(environ={}, config_file=tmp_path / "missing.toml")


def test_secrets_stay_out_of_repr_and_errors(tmp_path: Path) -> None:
    s = Settings(secret="k" * 40, redis_url="redis://:hunter2@127.0.0.1:6379/0")
    assert "kkkk" not in repr(s) and "hunter2" not in repr(s)
    config = tmp_path / "live.toml"
    config.write_text("secret = 12345678\n")
    with pytest.raises(SettingsError) as info:
        Settings.load(environ={}, config_file=config)
    assert "12345678" not in str(info.value)
