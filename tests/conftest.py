"""Shared fixtures: a clean CIOC environment per test, the sample world, running scripts."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = Path(__file__).resolve().parent / "scripts"


def clean_environ(**values):
    """Return os.environ without any CIOC_* variable, plus ``values``."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CIOC_")}
    environ["PYTHONUTF8"] = "1"
    environ.update({k: str(v) for k, v in values.items()})
    return environ


@pytest.fixture
def cioc_env(tmp_path, monkeypatch):
    """A CIOC environment whose every folder lies in tmp_path; also set in os.environ."""
    values = {
        "CIOC_TOOLS_PATH": tmp_path / "tools",
        "CIOC_VIRTUALSERVERS_BASE": tmp_path / "VirtualServers",
        "CIOC_LOG_ROOT": tmp_path / "logs",
        "CIOC_UDL_BASE": tmp_path / "UDLs",
        "CIOC_STATE_DIR": tmp_path / "state",
        "CIOC_MAIL_BACKEND": "file",
        "CIOC_MAIL_DIR": tmp_path / "mail",
        "CIOC_MAIL_OUTBOX": tmp_path / "outbox",
        "CIOC_TASK_NOTIFY_EMAIL": "tasks@example.org",
        "CIOC_ODBC_DRIVER": "SQLite3",
    }
    environ = clean_environ(**values)
    for key in list(os.environ):
        if key.startswith("CIOC_"):
            monkeypatch.delenv(key)
    for key, value in values.items():
        monkeypatch.setenv(key, str(value))
    monkeypatch.chdir(tmp_path)
    return environ


def run_command(args, env, timeout=120, cwd=None, **kwargs):
    """Run a command as a user would; return the CompletedProcess with text output."""
    return subprocess.run(
        [str(a) for a in args], env=env, cwd=cwd, capture_output=True, text=True,
        encoding="utf-8", errors="replace", timeout=timeout, **kwargs,
    )


def assert_no_traceback(result):
    assert "Traceback" not in result.stdout, result.stdout
    assert "Traceback" not in result.stderr, result.stderr


@pytest.fixture
def python():
    return sys.executable


def make_world(tmp_path, monkeypatch, **options):
    """Build a small two-site sample world in tmp_path/world (``options`` go to
    ``sampledb.create``) and set its settings in os.environ; ``.env`` on the World is the
    environment for subprocesses."""
    from cioctasks import sampledb

    built = sampledb.create(tmp_path / "world", sites=2, scale="small", seed=1, **options)
    for key in list(os.environ):
        if key.startswith("CIOC_"):
            monkeypatch.delenv(key)
    for key, value in built.environ().items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    built.env = clean_environ(**built.environ())
    return built


@pytest.fixture
def world(tmp_path, monkeypatch):
    """A small two-site sample world of current CIOC databases (see ``make_world``)."""
    return make_world(tmp_path, monkeypatch)


def connect(world, site="ciocdemo"):
    """Open a site of the sample world through the real UDL and ODBC path."""
    from cioctasks import config, db

    return db.connect(site, config.from_mapping(world.environ()))


def mails(world):
    """The messages the file mail backend wrote in the sample world, oldest first."""
    import email
    import email.policy

    written = sorted((world.directory / "mail").glob("*.eml"),
                     key=lambda p: (p.stat().st_mtime_ns, p.name))
    return [email.message_from_bytes(p.read_bytes(), policy=email.policy.default)
            for p in written]


def mails_of_a_run(world, script, *args):
    """Run a mailing script on the sample world; check it succeeded cleanly and mailed each
    recipient once; return the messages."""
    import sys

    result = run_command([sys.executable, script, *args], world.env)
    assert result.returncode == 0, result.stderr
    assert_no_traceback(result)
    messages = mails(world)
    assert messages
    recipients = [m["To"] for m in messages]
    assert len(recipients) == len(set(recipients))
    return messages
