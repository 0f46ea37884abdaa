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


# -- no edit of the file may raise anything but a one-line ConfigError (issue 11, item 3) --
BILLION_LAUGHS = "".join(
    f"{chr(97 + i)}: &{chr(97 + i)} [" + ",".join([f"*{chr(96 + i)}"] * 9 if i else ['"lol"'] * 9) + "]\n"
    for i in range(9))


def refused(tmp_path, text, match):
    with pytest.raises(ConfigError, match=match) as caught:
        load_config(write(tmp_path, text), env={})
    message = str(caught.value)
    assert "\n" not in message and len(message) <= 300, message
    return message


def test_nesting_10000_deep_is_refused_not_a_recursion_error(tmp_path):
    refused(tmp_path, "X: " + "[" * 10000 + "]" * 10000 + "\n", r"line 1, .*nested deeper than 64 levels")


def test_nesting_by_aliases_is_refused(tmp_path):
    deep = "[" * 40 + "x" + "]" * 40
    refused(tmp_path, f"a: &a {deep}\nb: {'[' * 40}*a{']' * 40}\n", r"aliases nest it deeper than 64")


def test_billion_laughs_is_refused_before_expansion(tmp_path):
    assert len(BILLION_LAUGHS) < 500
    refused(tmp_path, "section:\n" + "".join("  " + line + "\n" for line in BILLION_LAUGHS.splitlines()),
            r"aliases expand it to more than 100000 values")


def test_moderate_aliases_still_work(tmp_path):
    cfg = load_config(write(tmp_path, "base: &b {greeting: hi}\nRepeatPlugin:\n  <<: *b\n  extra: [*b, *b]\n"), env={})
    assert cfg.section("RepeatPlugin")["greeting"] == "hi"
    assert len(cfg.section_fingerprint("RepeatPlugin")) < 200


def test_recursive_alias_is_refused(tmp_path):
    refused(tmp_path, "section: &a {self: *a}\n", r"refers to its own anchor")


def test_integer_over_4300_digits_is_refused(tmp_path):
    refused(tmp_path, "RATE_BURST: " + "1" * 5000 + "\n", r"line 1, .*integer with too many digits")


def test_huge_integer_in_range_keys_is_refused(tmp_path):
    message = refused(tmp_path, "STOP_TIMEOUT: " + "9" * 400 + "\n", r"STOP_TIMEOUT: must be between 0 and 604800")
    assert "999999" not in message


def test_nul_in_base_path_is_refused(tmp_path):
    refused(tmp_path, 'BASE_PATH: "plug\\0ins"\n', r"BASE_PATH: contains a control character")


def test_nul_in_logfile_is_refused(tmp_path):
    refused(tmp_path, 'LOGFILE: "/tmp/x\\0y"\n', r"LOGFILE: contains a control character")


def test_unusable_base_path_is_a_config_error(tmp_path):
    refused(tmp_path, "BASE_PATH: " + "a" * 5000 + "\n", r"BASE_PATH: cannot use it")


@pytest.mark.parametrize("key", ["STOP_TIMEOUT", "IMPORT_TIMEOUT", "PLUGIN_TIMEOUT", "RATE_LIMIT"])
@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf", ".NaN"])
def test_nan_and_infinity_are_refused_for_every_duration(tmp_path, key, value):
    refused(tmp_path, f"{key}: {value}\n", rf"{key}: must be a finite number")


def test_durations_in_range_are_kept(tmp_path):
    cfg = load_config(write(tmp_path, "STOP_TIMEOUT: 0\nIMPORT_TIMEOUT: 2.5\nRATE_BURST: 10\n"), env={})
    assert (cfg.stop_timeout, cfg.import_timeout, cfg.rate_burst) == (0.0, 2.5, 10)
    refused(tmp_path, "PLUGIN_TIMEOUT: 0.01\n", r"PLUGIN_TIMEOUT: must be between 0.1 and")
    refused(tmp_path, "RATE_BURST: 0\n", r"RATE_BURST: must be between 1 and")


def test_mixed_key_types_in_a_section_are_refused(tmp_path):
    refused(tmp_path, "RepeatPlugin: {1: a, b: 2}\n", r"RepeatPlugin: a mapping mixes key types")


def test_oversized_file_is_refused(tmp_path):
    refused(tmp_path, "# " + "x" * (1024 * 1024) + "\n", r"larger than 1024 KiB")


def test_unexpected_exceptions_become_one_line_config_errors(tmp_path, monkeypatch):
    import rtmbotd.config as config
    monkeypatch.setattr(config, "_check_types", lambda path, data: 1 / 0)
    refused(tmp_path, "SLACK_TOKEN: xoxb-1\n", r"cannot load: ZeroDivisionError")


# -- token values are never echoed in an error (issue 11, item 6) --
TOKEN = "xoxb-1234567890-1234567890-abcdefghijklmnopqrstuvwx"


def test_token_as_a_list_is_refused_without_its_value(tmp_path):
    message = refused(tmp_path, f"SLACK_TOKEN: [{TOKEN}]\n", r"SLACK_TOKEN: must be a bot token \(xoxb-...\), got list$")
    assert "1234567890" not in message


def test_token_in_a_wrong_typed_key_is_redacted(tmp_path):
    message = refused(tmp_path, f"DEBUG: {TOKEN}\n", r"DEBUG: must be true or false, got str")
    assert "1234567890" not in message


@pytest.mark.parametrize("where", ["file", "env", "credential"])
def test_token_with_control_characters_is_refused_naming_the_source(tmp_path, where):
    bad = "xoxb-1\nxoxb-2" if where != "file" else "xoxb-1 xoxb-2"
    env, creds = {}, tmp_path / "creds"
    if where == "env":
        env["SLACK_TOKEN"] = bad
    elif where == "credential":
        creds.mkdir()
        (creds / "slack_token").write_text(bad)
        env["CREDENTIALS_DIRECTORY"] = str(creds)
    path = write(tmp_path, f'SLACK_TOKEN: "{bad if where == "file" else "xoxb-file"}"\n')
    with pytest.raises(ConfigError, match=r"SLACK_TOKEN: the token from .* contains spaces or control") as caught:
        load_config(path, env=env)
    assert "xoxb-2" not in str(caught.value)


def test_control_characters_in_store_url_from_the_environment_are_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"STORE_URL: contains a control character"):
        load_config(write(tmp_path, "SLACK_TOKEN: xoxb-1\n"), env={"STORE_URL": "sqlite:////tmp/x\n.sqlite"})


def test_tokens_stay_out_of_the_configs_repr(tmp_path):
    cfg = load_config(write(tmp_path, f"SLACK_TOKEN: {TOKEN}\nSLACK_APP_TOKEN: xapp-1-PW\n"), env={})
    assert cfg.slack_token == TOKEN and TOKEN not in repr(cfg) and "xapp-1-PW" not in repr(cfg)


def test_impossible_date_is_refused_with_its_line(tmp_path):
    refused(tmp_path, "SLACK_TOKEN: xoxb-1\nsection: {since: 2024-13-45}\n", r"line 2, .*cannot read this value: month must be")


@pytest.mark.parametrize("text", [
    'SLACK_API_URL: "ftp://admin:{pw}@slack.example/api/"\n',
    'CONNECTION: ["https://admin:{pw}@proxy.example"]\n',
    'ACTIVE_PLUGINS: ["https://admin:{pw}@x"]\n',
    'DEBUG: "https://admin:{pw}@x"\n',
    '"https://admin:{pw}@x": 1\n',           # an unknown key: only logged
])
def test_a_long_password_cut_short_in_an_error_is_still_redacted(tmp_path, text, caplog):
    """The value was cut to 40-60 characters before the redaction ran: the cut removed the
    `@`, and the first 40-odd characters of the password were printed."""
    password = "hunter2" * 10
    path = write(tmp_path, text.format(pw=password))
    try:
        load_config(path, env={})
        message = ""
    except ConfigError as exc:
        message = str(exc)
    shown = message + caplog.text
    assert "admin:[redacted]" in shown or "admin:" not in shown
    assert "hunter2" not in shown, shown


def test_a_fifo_as_config_ends_as_an_error_instead_of_blocking(tmp_path):
    """Opening a FIFO nobody writes to blocks: --check-config hung, and so would a reload."""
    import os
    import subprocess
    import sys
    fifo = tmp_path / "rtmbot.conf"
    os.mkfifo(fifo)
    done = subprocess.run([sys.executable, "-m", "rtmbotd", "-c", str(fifo), "--check-config"],
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 78 and "SLACK_TOKEN" in done.stderr, done.stderr


def test_a_config_from_a_pipe_is_still_read(tmp_path):
    """`--check-config -c <(generate)`: the shell hands over a pipe, written and closed."""
    import os
    read_end, write_end = os.pipe()
    os.write(write_end, b"SLACK_TOKEN: xoxb-from-a-pipe\n")
    os.close(write_end)
    try:
        assert load_config(f"/dev/fd/{read_end}", env={}).slack_token == "xoxb-from-a-pipe"
    finally:
        os.close(read_end)


# -- cluster keys -------------------------------------------------------------------------

@pytest.mark.parametrize("extra, why", [
    ("", "STORE_URL is not set"),
    ("STORE_URL: sqlite:///bot.sqlite\n", "SQLite is one host's file"),
    ("STORE_URL: 'not a url'\n", "SQLite is one host's file"),
])
def test_cluster_needs_a_postgresql_store(tmp_path, extra, why):
    with pytest.raises(ConfigError, match="CLUSTER: needs a PostgreSQL STORE_URL") as err:
        load_config(write(tmp_path, "CLUSTER: true\n" + extra))
    assert why in str(err.value)


def test_cluster_with_postgresql_and_node_name(tmp_path, monkeypatch):
    cfg = load_config(write(tmp_path, "CLUSTER: true\nSTORE_URL: postgresql://bot:pw@db/rtmbot\nNODE_NAME: node-2\n"))
    assert (cfg.cluster, cfg.node_name) == (True, "node-2")
    monkeypatch.setattr("socket.gethostname", lambda: "box1.example")
    cfg = load_config(write(tmp_path, "STORE_URL: postgresql://bot:pw@db/rtmbot\n"))
    assert (cfg.cluster, cfg.node_name) == (False, "box1.example")


def test_cluster_store_url_from_the_environment_counts(tmp_path):
    cfg = load_config(write(tmp_path, "CLUSTER: true\n"), env={"STORE_URL": "postgresql://bot@db/rtmbot"})
    assert cfg.cluster


@pytest.mark.parametrize("name", ["a b", "-lead", "x" * 64, "nö", "a/b"])
def test_bad_node_name_is_named(tmp_path, name):
    with pytest.raises(ConfigError, match="NODE_NAME: must be"):
        load_config(write(tmp_path, f"NODE_NAME: {name!r}\n"))


def test_timezone_is_an_iana_zone(tmp_path):
    assert str(load_config(write(tmp_path, "TIMEZONE: Europe/Berlin\n"), env={}).timezone) == "Europe/Berlin"


def test_timezone_defaults_to_the_systems(tmp_path, monkeypatch):
    monkeypatch.setenv("TZ", "America/New_York")
    assert str(load_config(write(tmp_path, "DEBUG: false\n"), env={}).timezone) == "America/New_York"


@pytest.mark.parametrize("value", ["Mars/Olympus", "../../etc/passwd", "CEST+2"])
def test_unknown_timezone_is_one_line_naming_the_key(tmp_path, value):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, f"TIMEZONE: {value}\n"), env={})
    text = str(info.value)
    assert "TIMEZONE: unknown time zone" in text and value in text and "\n" not in text


def test_timezone_must_be_text(tmp_path):
    with pytest.raises(ConfigError, match="TIMEZONE: must be an IANA time zone name"):
        load_config(write(tmp_path, "TIMEZONE: 2\n"), env={})
