import sys
from pathlib import Path

import pytest

from cioctasks import config
from cioctasks.errors import ConfigError
from conftest import assert_no_traceback, clean_environ, run_command


def test_defaults_follow_the_platform_and_derive_state_folders(tmp_path):
    settings = config.load({"CIOC_TOOLS_PATH": str(tmp_path)}, cwd=tmp_path)
    assert settings.tools_path == tmp_path
    assert settings.state_dir == tmp_path / "state"
    assert settings.mail_outbox == tmp_path / "state" / "outbox"
    assert settings.mail_port == 25
    assert settings.mail_backend == "smtp"
    assert settings.odbc_driver == "ODBC Driver 18 for SQL Server"
    if not config.WINDOWS:
        assert settings.log_root == Path("/var/log/cioc")


def test_ssl_changes_the_default_port_and_the_old_password_spelling_is_read(tmp_path):
    settings = config.load(
        {"CIOC_MAIL_USE_SSL": "1", "CIOC_MAil_PASSWORD": "s3cret", "CIOC_TOOLS_PATH": str(tmp_path)},
        cwd=tmp_path,
    )
    assert settings.mail_use_ssl and settings.mail_port == 465
    assert settings.mail_password == "s3cret"
    assert "s3cret" not in repr(settings)


def test_env_file_never_overrides_a_variable_already_set(tmp_path):
    (tmp_path / ".env").write_text(
        "CIOC_MAIL_HOST=mail.from-file.example\nCIOC_LOG_ROOT=/from/file\n", encoding="utf-8"
    )
    settings = config.load({"CIOC_MAIL_HOST": "smtp.env.example"}, cwd=tmp_path)
    assert settings.mail_host == "smtp.env.example"
    assert settings.log_root == Path("/from/file")
    assert settings.env_file == tmp_path / ".env"


def test_env_file_is_found_by_name_then_here_then_in_the_tools_path(tmp_path):
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / ".env").write_text("CIOC_MAIL_HOST=tools\n", encoding="utf-8")
    here = tmp_path / "here"
    here.mkdir()
    named = tmp_path / "named.env"
    named.write_text("CIOC_MAIL_HOST=named\n", encoding="utf-8")
    base = {"CIOC_TOOLS_PATH": str(tools)}
    assert config.load(base, cwd=here).mail_host == "tools"
    (here / ".env").write_text("CIOC_MAIL_HOST=here\n", encoding="utf-8")
    assert config.load(base, cwd=here).mail_host == "here"
    assert config.load({**base, "CIOC_ENV_FILE": str(named)}, cwd=here).mail_host == "named"


@pytest.mark.parametrize(
    "name, value",
    [
        ("CIOC_MAIL_PORT", "abc"),
        ("CIOC_MAIL_PORT", "70000"),
        ("CIOC_MAIL_BACKEND", "pigeon"),
        ("CIOC_TASK_NOTIFY_EMAIL", "not-an-address"),
        ("CIOC_TASK_NOTIFY_EMAIL", "a@example.org\r\nBcc: victim@example.org"),
        ("CIOC_TASK_NOTIFY_EMAIL", "josé@example.org"),  # mail could not be sent to it
        ("CIOC_TASK_NOTIFY_EMAIL", "ops@example..org"),
        ("CIOC_PING_URL", "ftp://example.org"),
        ("CIOC_MAIL_TIMEOUT", "-1"),
        ("CIOC_ENV_FILE", "/no/such/file.env"),
    ],
)
def test_a_bad_value_is_an_error_naming_the_variable(tmp_path, name, value):
    with pytest.raises(ConfigError) as error:
        config.load({name: value, "CIOC_TOOLS_PATH": str(tmp_path)}, cwd=tmp_path)
    assert name in str(error.value)
    assert "\n" not in str(error.value)


def test_a_bad_port_makes_a_command_exit_2_with_one_line(tmp_path):
    result = run_command(
        [sys.executable, "-m", "cioctasks", "status"],
        env=clean_environ(CIOC_MAIL_PORT="abc", CIOC_TOOLS_PATH=tmp_path),
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert_no_traceback(result)
    assert result.stderr.strip().count("\n") == 0
    assert "CIOC_MAIL_PORT" in result.stderr
