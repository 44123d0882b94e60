"""The status page as an operator sees it: built from a real run state and real task logs,
rendered by headless Chromium (Debian's ``chromium``) for what a person would see: the
failed cell is there and red, its strip has the runs, the page fits 1280 px without
wrapping a date. The page itself has no script: the layout is measured on a copy of it
with one inline script added, and the colours read from a screenshot of the page itself."""

import datetime
import html
import html.parser
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import zlib

import pytest

from conftest import SCRIPTS, assert_no_traceback, run_command
from cioctasks import config, logs, schedule, state, status, statuspage

NOW = datetime.datetime(2026, 11, 23, 9, 0)
DAY = datetime.timedelta(days=1)
SCHEDULE = """
[tasks.volnotify]
script = "volnotify/volnotify.py"
at = "06:00"
[tasks.cic_changes_for_vol]
script = "cron/cic_changes_for_vol.py"
at = "01:30"
[tasks.geoip_download]
script = "cron/geoip_download.py"
at = "05:15"
[tasks.process_logs]
script = "cron/process_logs.py"
at = "04:00"
"""
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
FAILED_RED = (0xC6, 0x28, 0x28)  # statuspage.COLOURS["failed"]


class Site:
    """A run state, task logs and a schedule in a folder, as a host keeps them."""

    def __init__(self, folder, databases):
        self.folder = folder
        self.databases = databases
        self.state = state.State(folder / "state")
        self.log_root = folder / "logs"
        (self.log_root / "cioctasks").mkdir(parents=True)
        path = folder / "schedule.toml"
        path.write_text(SCHEDULE, encoding="utf-8")
        self.entries = schedule.load(path)

    def run(self, task, database, started, seconds=4.0, status="ok", summary="done",
            lines=("working",)):
        """Record a run and write its lines to the task's log, as the runner does."""
        ended = started + datetime.timedelta(seconds=seconds)
        run_id = self.state.add_run(task, database, started, ended, status,
                                    0 if status == "ok" else 1, summary)
        self.log(task, database, started, *lines, f"{status} ({seconds:.1f}s) {summary}")
        return run_id

    def log(self, task, database, when, *messages, backup=None):
        path = logs.log_path(self.log_root, task)
        if backup:
            path = path.with_name(f"{path.name}.{backup}")
        with path.open("a", encoding="utf-8") as handle:
            for message in messages:
                stamp = when.strftime("%Y-%m-%d %H:%M:%S,") + f"{when.microsecond // 1000:03d}"
                handle.write(f"{stamp} INFO    {task}[{database or '-'}] {message}\n")

    def nights(self, count, failing=None):
        """``count`` nights of every task, the last one this morning; ``failing`` is
        (task, database) failing on the last night."""
        for back in range(count - 1, -1, -1):
            for entry in self.entries:
                started = datetime.datetime.combine(NOW.date() - back * DAY, entry.at)
                if entry.task == "geoip_download":
                    self.run(entry.task, "", started, seconds=20 + back % 4)
                    continue
                for number, name in enumerate(self.databases):
                    when = started + datetime.timedelta(minutes=number)
                    if back == 0 and failing == (entry.task, name):
                        self.run(entry.task, name, when, 7, "failed",
                                 "cannot reach the mail server: connection refused",
                                 lines=("sending 12 messages", "connection refused"))
                    else:
                        self.run(entry.task, name, when, 3 + number + back % 3,
                                 summary=f"{number + back} messages sent")

    def page(self, path=None):
        text = statuspage.build(self.state, self.entries, None, self.log_root, NOW)
        if path:
            path.write_text(text, encoding="utf-8")
        return text


@pytest.fixture
def site(tmp_path):
    built = Site(tmp_path, ["ciocdemo", "ciocnord", "ciocsud", "ciocest", "ciocouest"])
    yield built
    built.state.close()


class Element:
    def __init__(self, tag, attrs, parent=None):
        self.tag, self.attrs, self.parent, self.children, self.texts = tag, attrs, parent, [], []

    def text(self):
        return "".join(self.texts) + "".join(child.text() for child in self.children)

    def classes(self):
        return (self.attrs.get("class") or "").split()

    def find(self, tag=None, cls=None, **attrs):
        """Every element under this one with the tag, the class and the attributes."""
        found = []
        for child in self.children:
            if ((tag is None or child.tag == tag) and (cls is None or cls in child.classes())
                    and all(child.attrs.get(k) == v for k, v in attrs.items())):
                found.append(child)
            found += child.find(tag, cls, **attrs)
        return found


class TreeBuilder(html.parser.HTMLParser):
    """The page as a tree of Elements (the standard library's parser; void tags closed)."""

    VOID = {"meta", "br", "rect", "link", "img", "input"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = self.current = Element("document", {})

    def handle_starttag(self, tag, attrs):
        element = Element(tag, dict(attrs), self.current)
        self.current.children.append(element)
        if tag not in self.VOID:
            self.current = element

    def handle_startendtag(self, tag, attrs):
        self.current.children.append(Element(tag, dict(attrs), self.current))

    def handle_endtag(self, tag):
        node = self.current
        while node is not None and node.tag != tag:
            node = node.parent
        if node is not None and node.parent is not None:
            self.current = node.parent

    def handle_data(self, data):
        self.current.texts.append(data)


def parse(text):
    builder = TreeBuilder()
    builder.feed(text)
    return builder.root


def task_rows(document):
    """{task: <tr>} of the task grid, in page order."""
    rows = {}
    for th in document.find("th", "task"):
        if th.attrs.get("id"):
            rows[th.find("div", "tk")[0].children[0].texts[0].strip()] = th.parent
    return rows


def test_failures_come_first_and_each_links_to_the_log_lines_of_its_run(site):
    site.nights(3, failing=("volnotify", "ciocsud"))
    document = parse(site.page())
    rows = task_rows(document)
    assert list(rows) == ["volnotify", "cic_changes_for_vol", "geoip_download", "process_logs"]
    assert rows["volnotify"].attrs["class"] == "failed"
    (cell,) = rows["volnotify"].find("td", "k-failed")
    assert cell.find(cls="badge")[0].text() == "failed"
    assert "cannot reach the mail server" in cell.attrs["title"]
    (link,) = cell.find("a", "badge")
    anchor = link.attrs["href"]
    (section,) = document.find("section", id=anchor[1:])
    text = section.text()
    log = logs.log_path(site.log_root, "volnotify")
    lines = log.read_text(encoding="utf-8").splitlines()
    mine = [number for number, line in enumerate(lines, 1)
            if line.startswith("2026-11-23 06:02") and "volnotify[ciocsud]" in line]
    assert len(mine) == 3
    assert f"{log}, lines {mine[0]}-{mine[-1]}" in text
    shown = section.find("pre")[0].text().splitlines()
    assert [int(line.split()[0]) for line in shown] == mine
    assert "connection refused" in shown[1]
    assert not any("ciocest" in line or "2026-11-22" in line for line in shown)
    # The list of what needs attention says it too, with the same link.
    (attention,) = document.find("table", "attention")
    (row,) = attention.find("tr", "failed")
    assert [td.text() for td in row.find("td")][:3] == ["volnotify", "ciocsud", "failed"]
    assert row.find("a")[0].attrs["href"] == anchor


def test_the_strip_shows_the_last_30_runs_oldest_first_with_time_and_summary(site):
    site.nights(35, failing=("volnotify", "ciocsud"))
    rows = task_rows(parse(site.page()))
    cells = rows["volnotify"].find("td", "cell")
    assert len(cells) == 5
    marks = cells[sorted(site.databases).index("ciocsud")].find(cls="m")
    assert len(marks) == status.STRIP_RUNS
    assert [m.classes()[1] for m in marks] == ["k-ok"] * 29 + ["k-failed"]
    assert marks[0].attrs["title"].startswith("2026-10-25 06:02:00 ok")
    assert marks[-1].attrs["title"].startswith("2026-11-23 06:02:00 failed 7.0s")
    assert marks[-1].attrs["href"].startswith("#log-")
    # One wide cell for a task without databases, and a chart of 30 days of durations.
    (geoip,) = rows["geoip_download"].find("td", "cell")
    assert geoip.attrs["colspan"] == "5"
    bars = rows["volnotify"].find("g")
    assert len(bars) == status.CHART_DAYS
    assert bars[-1].find("title")[0].text().startswith("2026-11-23: 5 runs, 1 failed; mean")


def test_mail_queued_is_its_own_mark_and_not_a_failure_of_the_page(site):
    started = NOW.replace(hour=6)
    site.run("volnotify", "ciocdemo", started - DAY)
    site.run("volnotify", "ciocdemo", started, status="failed",
             summary="sent 3; queued 2 messages for the next run (mail server busy)")
    site.run("volnotify", "ciocnord", started, status="failed",
             summary="sent 3; ciocnord: no such table; queued 1 message for the next run (x)")
    cells = task_rows(parse(site.page()))["volnotify"].find("td", "cell")
    assert [c.classes()[1] for c in cells] == ["k-queued", "k-failed"]
    assert [m.classes()[1] for m in cells[0].find(cls="m")] == ["k-ok", "k-queued"]
    assert cells[0].find(cls="badge")[0].text() == "mail queued"


def test_overdue_never_run_and_refused_mail_are_shown(site, tmp_path):
    site.run("volnotify", "ciocdemo", NOW.replace(hour=6) - 3 * DAY)  # due since 06:00
    refused = tmp_path / "outbox" / "failed"
    refused.mkdir(parents=True)
    (refused / f"{1:024x}.eml").write_bytes(b"Subject: x\r\n\r\nbody\r\n")
    text = statuspage.build(site.state, site.entries, tmp_path / "outbox", site.log_root, NOW)
    document = parse(text)
    rows = task_rows(document)
    assert rows["volnotify"].attrs["class"] == "failed"  # overdue: among the first
    (cell,) = rows["volnotify"].find("td", "overdue")
    assert cell.find(cls="late")[0].text() == "overdue"
    (never,) = rows["process_logs"].find("td", "k-never")
    assert never.text() == "never run overdue"  # due since 04:00 and history is older
    assert "daily at 04:00" in rows["process_logs"].text()
    assert "next 2026-11-24 04:00" in rows["process_logs"].text()
    assert '<tr class="failed"><td>mail</td><td>outbox</td><td>1 refused</td>' in text


def test_log_lines_are_found_in_a_rotated_backup_and_across_the_rotation(site):
    started = NOW.replace(hour=6)
    run_id = site.state.add_run("volnotify", "ciocdemo", started,
                                started + datetime.timedelta(seconds=30), "failed", 1, "broke")
    site.log("volnotify", "ciocdemo", started, "first half", backup=1)
    site.log("volnotify", "ciocnord", started, "another database", backup=1)
    site.log("volnotify", "ciocdemo", started + datetime.timedelta(seconds=20), "second half")
    site.log("volnotify", "ciocdemo", started + datetime.timedelta(minutes=5), "a later run")
    document = parse(site.page())
    (section,) = document.find("section", id=f"log-{run_id}")
    log = logs.log_path(site.log_root, "volnotify")
    assert f"{log}.1, lines 1-1; {log}, lines 1-1" in section.text()
    shown = section.find("pre")[0].text()
    assert "first half" in shown and "second half" in shown
    assert "another database" not in shown and "a later run" not in shown


def test_hostile_text_is_escaped_and_the_page_needs_no_network(site):
    hostile = '<img src=x onerror=alert(1)>"'
    started = NOW.replace(hour=6)
    site.run("volnotify", hostile, started, status="failed",
             summary='<script>alert("x")</script> \' " & done',
             lines=("<script>document.location='http://evil.example/'</script>",))
    text = site.page()
    assert "<script" not in text.lower() and "<img" not in text.lower()
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in text
    document = parse(text)
    (header,) = [th for th in document.find("th") if "onerror" in th.text()]
    assert header.text() == hostile
    every = [e for e in _all(document)]
    assert not [e for e in every if e.tag in ("script", "link", "iframe", "img", "object")]
    assert not [e for e in every if "src" in e.attrs]
    assert all(e.attrs["href"].startswith("#") for e in every if "href" in e.attrs)
    assert not [e for e in every if any(k.startswith("on") for k in e.attrs)]
    style = document.find("style")[0].text()
    assert "url(" not in style and "@import" not in style and "@font-face" not in style


def _all(element):
    for child in element.children:
        yield child
        yield from _all(child)


def test_update_rewrites_the_page_whole(site, tmp_path):
    site.nights(2)
    settings = config.from_mapping({"CIOC_STATE_DIR": str(tmp_path / "state"),
                                    "CIOC_LOG_ROOT": str(site.log_root),
                                    "CIOC_MAIL_OUTBOX": str(tmp_path / "outbox")})
    target = tmp_path / "www" / "status.html"
    target.parent.mkdir()
    target.write_text("old page", encoding="utf-8")
    statuspage.update(settings, target, schedule_path=tmp_path / "schedule.toml")
    text = target.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and "cic_changes_for_vol" in text
    assert os.listdir(target.parent) == ["status.html"]


def test_every_run_rewrites_the_page_when_cioc_status_html_is_set(cioc_env, tmp_path):
    page = tmp_path / "status.html"
    env = dict(cioc_env, CIOC_STATUS_HTML=str(page))
    run_command([sys.executable, SCRIPTS / "plain_task.py"], env)
    result = run_command([sys.executable, SCRIPTS / "plain_task.py", "--fail"], env)
    assert result.returncode == 1
    assert "CIOC_STATUS_HTML" not in result.stderr  # written, no warning
    text = page.read_text(encoding="utf-8")
    assert "hunter2secret" not in text
    document = parse(text)
    (row,) = [tr for tr in document.find("tr", "failed") if tr.find("th", "task")]
    (cell,) = row.find("td", "k-failed")
    assert [m.classes()[1] for m in cell.find(cls="m")] == ["k-ok", "k-failed"]
    (section,) = document.find("section", id=cell.find("a", "badge")[0].attrs["href"][1:])
    assert "the work failed: Password=" in section.text()
    assert "plain_task.log, lines " in section.text()
    # status --html writes the same page (the schedule lists no plain_task: "not scheduled").
    again = tmp_path / "again.html"
    result = run_command([sys.executable, "-m", "cioctasks", "status", "--html", again], cioc_env)
    assert result.returncode == 1 and f"wrote {again}" in result.stdout
    assert_no_traceback(result)
    assert 'class="cell k-failed"' in again.read_text(encoding="utf-8")


# What a person sees: the page rendered by headless Chromium at 1280 x 900.

PROBE = """<script>
(function () {
  var found = {scrollWidth: document.documentElement.scrollWidth,
               clientWidth: document.documentElement.clientWidth, wrapped: [], dates: 0};
  document.querySelectorAll('.when').forEach(function (element) {
    var range = document.createRange();
    range.selectNodeContents(element);
    var tops = {};
    Array.prototype.forEach.call(range.getClientRects(), function (r) {
      if (r.width > 0) { tops[Math.round(r.top)] = 1; }
    });
    found.dates += 1;
    if (Object.keys(tops).length !== 1) { found.wrapped.push(element.textContent); }
  });
  var cell = document.querySelector('td.cell.k-failed');
  if (cell) {
    var box = cell.getBoundingClientRect();
    found.failed = {x: box.left, y: box.top, width: box.width, height: box.height,
      text: cell.innerText,
      marks: Array.prototype.filter.call(cell.querySelectorAll('.m'), function (m) {
        var r = m.getBoundingClientRect(); return r.width >= 2 && r.height >= 8; }).length};
  }
  document.documentElement.setAttribute('data-probe', JSON.stringify(found));
})();
</script>"""


def chromium(tmp_path, *args):
    result = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--force-device-scale-factor=1", "--window-size=1280,900",
         f"--user-data-dir={tmp_path / 'chromium-profile'}", *map(str, args)],
        capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def measure(tmp_path, page):
    """Lay out a copy of ``page`` with the probe script added; return what it measured."""
    probe = page.with_name("probe-" + page.name)
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"),
                     encoding="utf-8")
    dom = chromium(tmp_path, "--dump-dom", probe.as_uri())
    found = re.search(r'data-probe="([^"]*)"', dom)
    assert found, dom[:2000]
    return json.loads(html.unescape(found.group(1)))


def png_rows(path, last_row):
    """The RGB pixels of rows 0 to ``last_row`` of a PNG (8 bits, RGB or RGBA): a list of
    rows of (r, g, b); the standard library only (zlib, struct)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    position, compressed = 8, b""
    while position < len(data):
        length, kind = struct.unpack(">I4s", data[position:position + 8])
        body = data[position + 8:position + 8 + length]
        position += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            compressed += body
    assert depth == 8 and colour in (2, 6) and interlace == 0
    channels = 4 if colour == 6 else 3
    raw, stride = zlib.decompress(compressed), width * channels
    previous, rows = bytearray(stride), []
    for y in range(min(height, last_row + 1)):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up = previous[i]
            if kind == 1:
                line[i] = (line[i] + left) & 255
            elif kind == 2:
                line[i] = (line[i] + up) & 255
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 255
            elif kind == 4:
                corner = previous[i - channels] if i >= channels else 0
                guess = left + up - corner
                near = min((abs(guess - left), 0), (abs(guess - up), 1), (abs(guess - corner), 2))
                line[i] = (line[i] + (left, up, corner)[near[1]]) & 255
        rows.append([tuple(line[x:x + 3]) for x in range(0, stride, channels)])
        previous = line
    return width, height, rows


@needs_chromium
def test_chromium_shows_the_failed_cell_red_with_its_runs_on_a_page_that_fits_1280_px(
        site, tmp_path):
    site.nights(35, failing=("volnotify", "ciocsud"))
    page = tmp_path / "status.html"
    site.page(page)
    found = measure(tmp_path, page)
    assert found["clientWidth"] >= 1260
    assert found["scrollWidth"] <= found["clientWidth"], found  # no horizontal scrolling
    assert found["dates"] > 20 and found["wrapped"] == []
    failed = found["failed"]
    assert failed["marks"] == 30
    assert failed["text"].split()[:3] == ["failed", "7.0s", "11-23"]
    shot = tmp_path / "status.png"
    chromium(tmp_path, f"--screenshot={shot}", page.as_uri())
    bottom = int(failed["y"] + failed["height"])
    assert bottom < 900, failed  # failures first: in sight without scrolling
    width, height, rows = png_rows(shot, bottom)
    assert (width, height) == (1280, 900)
    inside = [pixel for row in rows[int(failed["y"]) + 2:bottom - 1]
              for pixel in row[int(failed["x"]) + 2:int(failed["x"] + failed["width"]) - 1]]
    red = sum(1 for r, g, b in inside if _near(r, g, b, FAILED_RED))
    pale = sum(1 for r, g, b in inside if _near(r, g, b, (0xFD, 0xE2, 0xE2)))
    assert red > 150, red  # the badge and the last mark of the strip
    assert pale > len(inside) / 3, (pale, len(inside))  # the cell's own red background
    # Its neighbour, an ok cell, has no red at all.
    right = int(failed["x"] + failed["width"]) + 3
    beside = [pixel for row in rows[int(failed["y"]) + 2:bottom - 1]
              for pixel in row[right:right + int(failed["width"]) - 4]]
    assert not [p for p in beside if _near(*p, FAILED_RED)]


def _near(r, g, b, colour, tolerance=24):
    return all(abs(a - c) <= tolerance for a, c in zip((r, g, b), colour))


@needs_chromium
def test_chromium_many_databases_scroll_in_the_table_and_no_date_wraps(tmp_path):
    site = Site(tmp_path, [f"site-with-a-long-name-{n:02}" for n in range(20)])
    site.nights(2, failing=("cic_changes_for_vol", "site-with-a-long-name-07"))
    page = tmp_path / "status.html"
    site.page(page)
    site.state.close()
    found = measure(tmp_path, page)
    assert found["scrollWidth"] <= found["clientWidth"], found  # the table scrolls, not the page
    assert found["dates"] > 60 and found["wrapped"] == []
    assert found["failed"]["marks"] == 2
