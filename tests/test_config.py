import pytest

from rtmbotd.config import load_config
from rtmbotd.errors import ConfigError


def write(tmp_path, text, name="rtmbot.conf"):
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def test_defaults_and_rtm_mode(tmp_path):
    cfg = load_config(write(tmp_path, 'SLACK_TOKEN: "xoxb-1"\n'), env={})
    assert cfg.connection == "rtm"
    assert cfg.base_path == tmp_path
    assert cfg.plugins_dir == tmp_path / "plugins"
    assert cfg.api_url == "https://slack.com/api/"


def test_app_token_selects_socket_mode(tmp_path):
    cfg = load_config(write(tmp_path, 'SLACK_TOKEN: xoxb-1\nSLACK_APP_TOKEN: xapp-1\n'), env={})
    assert cfg.connection == "socket_mode"


def test_explicit_connection_overrides(tmp_path):
    cfg = load_config(write(tmp_path, 'SLACK_TOKEN: xoxb-1\nSLACK_APP_TOKEN: xapp-1\nCONNECTION: rtm\n'), env={})
    assert cfg.connection == "rtm"


def test_socket_mode_without_app_token_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="SLACK_APP_TOKEN"):
        load_config(write(tmp_path, 'SLACK_TOKEN: xoxb-1\nCONNECTION: socket_mode\n'), env={})


def test_swapped_tokens_named(tmp_path):
    with pytest.raises(ConfigError, match="SLACK_TOKEN.*app token"):
        load_config(write(tmp_path, 'SLACK_TOKEN: xapp-1\n'), env={})


def test_broken_yaml_names_line(tmp_path):
    with pytest.raises(ConfigError, match=r"invalid YAML: .*line 2"):
        load_config(write(tmp_path, 'SLACK_TOKEN: xoxb-1\nDEBUG: [unclosed\n'), env={})


def test_invalid_utf8_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match=r"line 2: not valid UTF-8"):
        load_config(write(tmp_path, b'SLACK_TOKEN: xoxb-1\nX: "\xff\xfe"\n'), env={})


def test_wrong_type_names_key(tmp_path):
    with pytest.raises(ConfigError, match="RATE_LIMIT: must be"):
        load_config(write(tmp_path, 'RATE_LIMIT: fast\n'), env={})
    with pytest.raises(ConfigError, match="DEBUG: must be true or false"):
        load_config(write(tmp_path, 'DEBUG: "yes please"\n'), env={})


def test_top_level_must_be_mapping(tmp_path):
    with pytest.raises(ConfigError, match="mapping"):
        load_config(write(tmp_path, '- a\n- b\n'), env={})


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nope.conf", env={})


def test_secrets_from_env_and_credentials(tmp_path):
    path = write(tmp_path, 'SLACK_TOKEN: xoxb-file\n')
    assert load_config(path, env={"SLACK_TOKEN": "xoxb-env"}).slack_token == "xoxb-env"
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "slack_token").write_text("xoxb-cred\n")
    assert load_config(path, env={"CREDENTIALS_DIRECTORY": str(creds)}).slack_token == "xoxb-cred"


def test_no_token_is_valid_but_unconfigured(tmp_path):
    cfg = load_config(write(tmp_path, '# nothing yet\n'), env={})
    assert not cfg.has_token


def test_plugin_sections_kept(tmp_path):
    cfg = load_config(write(tmp_path, 'SLACK_TOKEN: xoxb-1\nRepeatPlugin:\n  greeting: hi\n'), env={})
    assert cfg.section("RepeatPlugin") == {"greeting": "hi"}
    assert cfg.section("absent") == {}


def test_relative_base_path_is_relative_to_config(tmp_path):
    (tmp_path / "bot").mkdir()
    cfg = load_config(write(tmp_path, 'BASE_PATH: bot\n'), env={})
    assert cfg.base_path == tmp_path / "bot"
    with pytest.raises(ConfigError, match="BASE_PATH"):
        load_config(write(tmp_path, 'BASE_PATH: missing\n'), env={})
