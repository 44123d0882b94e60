"""process_logged_errors: every error in a digest once, through appends and rotations."""

import datetime
import mmap
import os
import re
import subprocess
import sys

import hypothesis
import hypothesis.strategies as st

from conftest import ROOT, assert_no_traceback, mails, run_command
from smtpserver import SMTPServer, free_port

from cioctasks import errorlog as errors

SCRIPT = ROOT / "cron" / "process_logged_errors.py"


def entry(when, url="https://site.cioc.ca/record/1", kind="KeyError", message="'ViewType'",
          function="view_record"):
    return (f"{when:%Y-%m-%d %H:%M:%S},123 {url}\n"
            "Traceback (most recent call last):\n"
            f'  File "/opt/cioc/web/record.py", line 12, in {function}\n'
            "    value = data['x']\n"
            f"{kind}: {message}\n")


NOW = datetime.datetime.now().replace(microsecond=0)


def python_folder(world, site="ciocdemo"):
    return world.directory / "logs" / site / "python"


def run(world, *args, env=None):
    return run_command([sys.executable, SCRIPT, "-a", "ciocdemo", *args], env or world.env)


def digest_bodies(world):
    return [m.get_body(("plain",)).get_content() for m in mails(world)]


def test_grouping_blurs_numbers_and_values_but_not_types_or_frames():
    digest = errors.Digest()
    digest.add("t1", "u1", entry(NOW, message="invalid literal for int(): 'abc12'").splitlines()[1:])
    digest.add("t2", "u2", entry(NOW, message="invalid literal for int(): 'xyz9'").splitlines()[1:])
    digest.add("t3", "u3", entry(NOW, kind="ValueError", message="'abc12'").splitlines()[1:])
    digest.add("t4", "u4", entry(NOW, function="other").splitlines()[1:])
    assert digest.entries == 4 and len(digest.groups) == 3


def test_chained_exceptions_are_grouped_by_the_last_one():
    lines = (entry(NOW, kind="KeyError").splitlines()[1:]
             + ["", "During handling of the above exception, another exception occurred:", ""]
             + entry(NOW, kind="RuntimeError", message="wrapped").splitlines()[1:])
    digest = errors.Digest()
    digest.add("t", "u", lines)
    assert list(digest.groups)[0][0] == "RuntimeError"


def test_each_error_is_mailed_once_across_appends(world):
    first = run(world)
    assert first.returncode == 0, first.stderr
    assert_no_traceback(first)
    assert len(mails(world)) == 1
    nothing = run(world)
    assert "no mail" in nothing.stdout and len(mails(world)) == 1
    with open(python_folder(world) / "error.log", "a", encoding="utf-8") as log:
        log.write(entry(NOW, kind="ZeroDivisionError", message="division by zero"))
    later = run(world)
    assert "1 new errors in 1 kinds" in later.stdout
    assert "ZeroDivisionError: division by zero" in digest_bodies(world)[-1]


def test_a_rotation_between_runs_loses_and_repeats_nothing(world):
    run(world)
    folder = python_folder(world)
    with open(folder / "error.log", "a", encoding="utf-8") as log:
        log.write(entry(NOW, kind="LateError", message="before midnight"))
    (folder / "error.log").rename(folder / f"error.log.{datetime.date.today() + datetime.timedelta(days=1)}")
    (folder / "error.log").write_text(entry(NOW, kind="EarlyError", message="after midnight"),
                                      encoding="utf-8")
    result = run(world)
    assert "2 new errors in 2 kinds" in result.stdout, result.stdout
    body = digest_bodies(world)[-1]
    assert "LateError" in body and "EarlyError" in body


def test_a_truncated_log_is_read_from_its_start(world):
    run(world)
    log = python_folder(world) / "error.log"
    log.write_text(entry(NOW, kind="FreshError", message="after truncation"), encoding="utf-8")
    result = run(world)
    assert "1 new errors" in result.stdout
    assert "FreshError" in digest_bodies(world)[-1]


def test_a_line_still_being_written_waits_for_the_next_run(world):
    run(world)
    log = python_folder(world) / "error.log"
    text = entry(NOW, kind="SlowError", message="written in two parts")
    with open(log, "a", encoding="utf-8") as handle:
        handle.write(text[:-10])
    first = run(world)
    assert "SlowError" not in "".join(digest_bodies(world)[1:])
    with open(log, "a", encoding="utf-8") as handle:
        handle.write(text[-10:])
    second = run(world)
    assert "1 new errors" in second.stdout, (first.stdout, second.stdout)
    assert "SlowError: written in two parts" in digest_bodies(world)[-1]


def test_bytes_that_are_not_utf8_do_not_stop_it(world):
    run(world)
    with open(python_folder(world) / "error.log", "ab") as log:
        log.write(entry(NOW, kind="DecodeError", message="caf\xe9").encode("latin-1"))
    result = run(world)
    assert result.returncode == 0 and "1 new errors" in result.stdout


def test_a_digest_for_a_server_that_is_down_is_queued_the_run_fails_and_the_position_moves(world):
    port = free_port()
    env = dict(world.env, CIOC_MAIL_BACKEND="smtp", CIOC_MAIL_PORT=str(port))
    first = run(world, env=env)
    assert first.returncode == 1  # not delivered: monitoring sees it tonight
    assert_no_traceback(first)
    assert (f"queued 1 message for the next run (mail server 127.0.0.1:{port}: connection "
            "refused)") in first.stdout
    assert "mailed" not in first.stdout
    assert len(list((world.directory / "state" / "outbox").glob("*.eml"))) == 1
    with SMTPServer(port=port) as server:
        second = run(world, env=env)
        assert second.returncode == 0, second.stderr
        assert "no mail" in second.stdout
        assert len(server.wait_for(1)) == 1  # the queued digest, sent by the outbox


def test_a_rescan_mails_again_without_moving_the_position(world):
    run(world)
    rescan = run(world, "--hours", "48")
    assert rescan.returncode == 0 and "rescanned errors" in rescan.stdout
    assert len(mails(world)) == 2
    assert "no mail" in run(world).stdout


def test_per_site_recipients_and_a_dry_run(world):
    env = dict(world.env, CIOC_ERROR_EMAIL_CIOCDEMO="dev1@example.org, dev2@example.org")
    dry = run(world, "-n", env=env)
    assert "would mail" in dry.stdout and mails(world) == []
    run(world, env=env)
    assert mails(world)[0]["To"] == "dev1@example.org, dev2@example.org"


def test_the_first_run_skips_older_history(world):
    old = python_folder(world) / "error.log.2020-01-01"
    old.write_text(entry(datetime.datetime(2020, 1, 1), kind="AncientError"), encoding="utf-8")
    os.utime(old, (0, 0))
    run(world)
    assert "AncientError" not in digest_bodies(world)[0]


def reference_digest(raw):
    """The digest of a whole log, entry by entry through Digest.add: what the stepwise,
    keyed scan must agree with."""
    text = raw.decode("utf-8", "replace").replace("\r\n", "\n")
    digest = errors.Digest()
    entries = re.split(r"^(?=20\d\d-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})", text, flags=re.M)
    for part in entries:
        header, _, body = part.partition("\n")
        match = errors.ENTRY.match(header.encode())
        if match:
            lines = [line for line in body.splitlines() if line.strip()]
            digest.add(match.group(1).decode(), match.group(2).decode().strip(), lines,
                       lines[-errors.TAIL_LINES:])
    return digest


names = st.sampled_from(["view", "view2", "view3", "a1b", "save"])
kinds = st.sampled_from(["KeyError", "Error1", "Error2", "pyodbc.Error", "Bad thing"])
messages = st.sampled_from(["'ViewType{n}'", "id {n} not found", "near 'x{n}' (102)", "",
                            "{n}"])
log_entries = st.lists(st.tuples(
    st.integers(0, 10 ** 6), kinds, messages, names, st.integers(0, 3),
    st.sampled_from(["", "\ncontinued line {n}", "\n" + "x" * 700, "\n    " + "y" * 900]),
    st.booleans(), st.sampled_from([b"", b" caf\xe9"])), min_size=1, max_size=25)


def write_entries(path, entries, eol):
    raw = b""
    for number, kind, message, function, frames, extra, traceback, odd in entries:
        when = NOW + datetime.timedelta(seconds=number)
        header = f"{when:%Y-%m-%d %H:%M:%S},{number % 1000:03d} https://site.cioc.ca/r/{number % 7}"
        body = ""
        if traceback:
            body = "Traceback (most recent call last):\n" + "".join(
                f'  File "D:\\cioc\\web\\m{depth}.py", line {number % 90}, in outer\n    go()\n'
                for depth in range(frames))
            body += f'  File "/opt/cioc/web/record.py", line 12, in {function}\n    x = 1\n'
            body += f"{kind}: {message.format(n=number)}" + extra.format(n=number) + "\n"
        text = header.encode() + odd + ("\n" + body).encode()
        raw += text.replace(b"\n", eol.encode())
    path.write_bytes(raw)
    return raw


@hypothesis.settings(max_examples=150, deadline=None)
@hypothesis.given(entries=log_entries, eol=st.sampled_from(["\n", "\r\n"]),
                  step=st.integers(1, 3000), key=st.sampled_from([40, 120, 512]),
                  split=st.sampled_from([0, 10 ** 9]))
def test_the_stepwise_keyed_scan_gives_the_digest_entry_by_entry_reading_gives(
        tmp_path_factory, entries, eol, step, key, split):
    """Whatever the steps cut (a header, a CRLF), however short the key (frames outside it,
    digits in the exception type or the function name), read by one process or two, the
    digest is the same."""
    path = tmp_path_factory.mktemp("log") / "error.log"
    raw = write_entries(path, entries, eol)
    old = errors.STEP, errors.KEY, errors.SPLIT
    errors.STEP, errors.KEY, errors.SPLIT = step, key, split
    try:
        digest = errors.Digest()
        assert errors.scan(path, 0, digest) == len(raw)
    finally:
        errors.STEP, errors.KEY, errors.SPLIT = old
    assert digest.text("site") == reference_digest(raw).text("site")


def test_a_backlog_is_read_by_two_processes_and_a_child_that_fails_costs_nothing(
        tmp_path, monkeypatch):
    log = tmp_path / "error.log"
    entries = [(n * 7, kind, message, name, n % 3, "", n % 5 > 0, b"")
               for n, (kind, message, name) in enumerate(
                   [("KeyError", "'ViewType{n}'", "view"), ("Error1", "id {n}", "save"),
                    ("pyodbc.Error", "near 'x{n}' (102)", "view2")] * 40)]
    raw = write_entries(log, entries, "\r\n")
    expected = reference_digest(raw).text("site")
    monkeypatch.setattr(errors, "SPLIT", 0)
    forks, fork = [], os.fork
    monkeypatch.setattr(os, "fork", lambda: forks.append(1) or fork())
    digest = errors.Digest()
    assert errors.scan(log, 0, digest) == len(raw)
    assert forks == [1] and digest.text("site") == expected
    # A "child" that ends at once, having sent nothing: the parent reads its half.
    children = []  # kept, so that subprocess does not reap the child itself
    monkeypatch.setattr(os, "fork", lambda: children.append(subprocess.Popen(["false"]))
                        or children[-1].pid)
    digest = errors.Digest()
    assert errors.scan(log, 0, digest) == len(raw)
    assert digest.text("site") == expected


def test_a_scan_from_an_offset_reads_only_what_follows(tmp_path):
    """The new part is mapped from a page boundary before it; what is before is not
    counted again, and the entry a line still being written may belong to waits."""
    log = tmp_path / "error.log"
    log.write_text("".join(entry(NOW, kind=f"Old{n}Error") for n in range(60)), encoding="utf-8")
    size = log.stat().st_size
    assert size > mmap.ALLOCATIONGRANULARITY and size % mmap.ALLOCATIONGRANULARITY
    with open(log, "a", encoding="utf-8", newline="") as handle:
        handle.write(entry(NOW, kind="NewError").replace("\n", "\r\n"))
        handle.write(entry(NOW, kind="WaitingError").replace("\n", "\r\n"))
        handle.write(entry(NOW, kind="Later")[:30])
    digest = errors.Digest()
    offset = errors.scan(log, size, digest)
    assert digest.entries == 1 and [s[0] for s in digest.groups] == ["NewError"]
    assert log.read_bytes()[offset:].startswith(entry(NOW, kind="WaitingError")[:40].encode())


def test_a_large_log_is_scanned_with_the_same_result_and_identical_entries_share_one_kind(tmp_path):
    """A flood of one error is one kind, and entries without a traceback are told apart by
    their URL."""
    filler = "".join(f"    detail line {n}\n" for n in range(300))
    blocks = []
    for n in range(600):
        header, traceback = entry(NOW, url=f"https://site.cioc.ca/record/{n % 3}").split("\n", 1)
        blocks.append(f"{header}\n{filler}{traceback}")
    blocks += [f"{NOW:%Y-%m-%d %H:%M:%S},123 https://site.cioc.ca/page/{name}\n{filler}"
               for name in ("alpha", "beta", "alpha")]
    log = tmp_path / "error.log"
    log.write_text("".join(blocks), encoding="utf-8")
    assert log.stat().st_size > 3 << 20
    digest = errors.Digest()
    assert errors.scan(log, 0, digest) == log.stat().st_size
    assert digest.entries == 603
    counts = sorted((signature[:2], group["count"]) for signature, group in digest.groups.items())
    assert counts == [(("(no traceback)", "https://site.cioc.ca/page/alpha"), 2),
                      (("(no traceback)", "https://site.cioc.ca/page/beta"), 1),
                      (("KeyError", "<value>"), 600)]


def test_a_digest_one_of_whose_recipients_is_refused_says_so_and_exits_1(world):
    with SMTPServer() as server:
        server.refuse.add("gone@example.org")
        env = dict(world.env, CIOC_MAIL_BACKEND="smtp", CIOC_MAIL_PORT=str(server.port),
                   CIOC_ERROR_EMAIL_CIOCDEMO="dev@example.org, gone@example.org")
        result = run(world, env=env)
        server.wait_for(1)
    assert result.returncode == 1
    assert_no_traceback(result)
    assert server.envelopes[0][1] == ["dev@example.org"]
    assert (f"mail to gone@example.org refused by 127.0.0.1:{server.port}: 550 5.1.1 no such "
            "mailbox") in result.stdout


def test_the_head_hash_stays_the_sha256_earlier_runs_stored(tmp_path):
    """The read positions of a site survive an upgrade: same file, same hash."""
    import hashlib

    log = tmp_path / "error.log"
    log.write_bytes(b"2026-11-22 14:03:11,123 x\r\n" * 20)
    assert errors.head_hash(log, 256) == hashlib.sha256(log.read_bytes()[:256]).hexdigest()[:16]


LOADED_AT_EXIT = """
import atexit, runpy, sys
heavy = ("cioctasks.mail", "email.message", "ssl", "smtplib", "hashlib", "socket")
atexit.register(lambda: print("loaded:", ",".join(m for m in heavy if m in sys.modules)))
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_the_15_minute_run_with_nothing_new_loads_no_mail_ssl_or_hash_module(world):
    """What every idle run pays at start-up: the modules only a run with mail to send
    needs are not imported when the outbox is empty and there is nothing new."""
    script = ROOT / "cron" / "process_logged_errors.py"
    assert run_command([sys.executable, script], world.env).returncode == 0  # reads the logs
    (world.directory / "state" / "outbox").mkdir(parents=True, exist_ok=True)
    idle = run_command([sys.executable, "-c", LOADED_AT_EXIT, script], world.env)
    assert idle.returncode == 0, idle.stderr
    assert "0 new errors" in idle.stdout
    assert idle.stdout.rstrip().endswith("loaded:"), idle.stdout
