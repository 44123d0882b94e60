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


def write_env(folder, text, encoding="utf-8"):
    path = folder / ".env"
    path.write_text(text, encoding=encoding)
    return path


def test_an_unclosed_quote_in_the_env_file_is_an_error_naming_the_file_and_line(tmp_path):
    """python-dotenv drops such a line with a warning, and the lines after it up to the
    next quote: here the notify address would silently vanish."""
    path = write_env(tmp_path, 'CIOC_MAIL_HOST=mail.example.org\nCIOC_MAIL_PASSWORD="s3cret\n'
                               "CIOC_TASK_NOTIFY_EMAIL=ops@example.org\n")
    with pytest.raises(ConfigError) as error:
        config.load({"CIOC_TOOLS_PATH": str(tmp_path)}, cwd=tmp_path)
    message = str(error.value)
    assert message == f"{path}, line 2: the quoted value of CIOC_MAIL_PASSWORD is not closed"
    assert "s3cret" not in message


@pytest.mark.parametrize("line, why", [
    ("CIOC_TASK_NOTIFY_EMAIL ops@example.org", "CIOC_TASK_NOTIFY_EMAIL has no '='"),
    ("CIOC_TASK_NOTIFY_EMAIL", "CIOC_TASK_NOTIFY_EMAIL has no '='"),
    ("CIOC_TASK_NOTIFY_EMAIL: ops@example.org", "CIOC_TASK_NOTIFY_EMAIL has no '='"),
    ("set CIOC_TASK_NOTIFY_EMAIL=ops@example.org", "not a NAME=value line"),
    ("CIOC_TASK_NOTIFY_EMAIL='ops@example.org'x", "the value of CIOC_TASK_NOTIFY_EMAIL cannot"),
])
def test_an_env_line_that_is_not_name_equals_value_is_an_error(tmp_path, line, why):
    path = write_env(tmp_path, f"# settings\n\n{line}\nCIOC_MAIL_HOST=mail.example.org\n")
    with pytest.raises(ConfigError) as error:
        config.load({"CIOC_TOOLS_PATH": str(tmp_path)}, cwd=tmp_path)
    assert str(error.value).startswith(f"{path}, line 3: {why}")
    assert "ops@" not in str(error.value)


def test_every_unreadable_env_line_is_named_and_the_rest_can_still_be_read(tmp_path):
    """For the report of the error itself: the lines around a bad one are still there."""
    path = write_env(tmp_path, 'CIOC_MAIL_PASSWORD="s3cret\nCIOC_TASK_NOTIFY_EMAIL=ops@example.org'
                               "\nCIOC_MAIL_HOST\nCIOC_MAIL_PORT=2525\n")
    with pytest.raises(config.EnvFileError) as error:
        config.read_env_file(path)
    assert (error.value.path, error.value.line) == (path, 1)
    assert str(error.value).endswith("line 1: the quoted value of CIOC_MAIL_PASSWORD is not "
                                     "closed (also line 3)")
    assert config.read_env_file(path, strict=False) == {
        "CIOC_TASK_NOTIFY_EMAIL": "ops@example.org", "CIOC_MAIL_PORT": "2525"}


def test_env_files_with_quotes_comments_export_and_multiline_values_still_load(tmp_path):
    write_env(tmp_path, '# mail\nexport CIOC_MAIL_HOST = "mail.example.org"  # ours\n'
                        "CIOC_MAIL_PASSWORD='two\nlines'\nOTHER_TOOL_FLAG\n")
    settings = config.load({"CIOC_TOOLS_PATH": str(tmp_path)}, cwd=tmp_path)
    assert settings.mail_host == "mail.example.org"
    assert settings.mail_password == "two\nlines"


def test_an_env_file_saved_with_a_byte_order_mark_keeps_its_first_variable(tmp_path):
    """Notepad writes one; the first name would otherwise start with it and never match."""
    write_env(tmp_path, "CIOC_MAIL_HOST=mail.example.org\n", encoding="utf-8-sig")
    assert config.load({"CIOC_TOOLS_PATH": str(tmp_path)}, cwd=tmp_path).mail_host == \
        "mail.example.org"


def test_an_unparsable_env_line_stops_a_command_with_exit_2_and_no_dotenv_warning(tmp_path):
    path = write_env(tmp_path, 'CIOC_MAIL_PASSWORD="s3cret\nCIOC_TASK_NOTIFY_EMAIL=a@example.org\n')
    result = run_command([sys.executable, "-m", "cioctasks", "status"],
                         env=clean_environ(CIOC_TOOLS_PATH=tmp_path), cwd=tmp_path)
    assert result.returncode == 2
    assert_no_traceback(result)
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert f"{path}, line 1" in result.stderr
    assert "python-dotenv" not in result.stderr and "s3cret" not in result.stderr


OFF = ["", "0", "false", "False", "no", "NO", "off", " Off ", "n", "f"]
ON = ["1", "true", "TRUE", "yes", "Yes", "on", "ON", " y ", "t"]


@pytest.mark.parametrize("name", ["CIOC_MAIL_USE_SSL", "CIOC_MAIL_STARTTLS"])
@pytest.mark.parametrize("word", OFF)
def test_an_off_word_turns_an_on_off_variable_off(tmp_path, name, word):
    settings = config.load({name: word, "CIOC_TOOLS_PATH": str(tmp_path)}, cwd=tmp_path)
    assert not settings.mail_use_ssl and not settings.mail_starttls
    assert settings.mail_port == 25


@pytest.mark.parametrize("name, attribute", [("CIOC_MAIL_USE_SSL", "mail_use_ssl"),
                                             ("CIOC_MAIL_STARTTLS", "mail_starttls")])
@pytest.mark.parametrize("word", ON)
def test_an_on_word_turns_an_on_off_variable_on(tmp_path, name, attribute, word):
    settings = config.load({name: word, "CIOC_TOOLS_PATH": str(tmp_path)}, cwd=tmp_path)
    assert getattr(settings, attribute)


@pytest.mark.parametrize("name", ["CIOC_MAIL_USE_SSL", "CIOC_MAIL_STARTTLS"])
@pytest.mark.parametrize("word", ["maybe", "2", "enabled", "nope"])
def test_any_other_word_for_an_on_off_variable_is_an_error_naming_it(tmp_path, name, word):
    with pytest.raises(ConfigError) as error:
        config.load({name: word, "CIOC_TOOLS_PATH": str(tmp_path)}, cwd=tmp_path)
    assert str(error.value).startswith(f"{name}: not on or off: {word!r}")


def test_a_bad_on_off_word_makes_a_command_exit_2(tmp_path):
    result = run_command([sys.executable, "-m", "cioctasks", "status"],
                         env=clean_environ(CIOC_MAIL_USE_SSL="off!", CIOC_TOOLS_PATH=tmp_path),
                         cwd=tmp_path)
    assert result.returncode == 2
    assert_no_traceback(result)
    assert "CIOC_MAIL_USE_SSL: not on or off" in result.stderr


def test_a_wrapped_secret_is_not_quoted_back_from_the_env_file(tmp_path):
    path = write_env(tmp_path, "CIOC_MAIL_PASSWORD=first-half\nsecond half\n")
    with pytest.raises(ConfigError) as error:
        config.load({"CIOC_TOOLS_PATH": str(tmp_path)}, cwd=tmp_path)
    assert str(error.value) == f"{path}, line 2: not a NAME=value line"
