"""process_logs: the real AWStats counts each access log once and its pages are swapped in whole."""

import datetime
import os
import re
import sys
from pathlib import Path

import pytest

from conftest import ROOT, assert_no_traceback, run_command

SCRIPT = ROOT / "cron" / "process_logs.py"
sys.path.insert(0, str(ROOT / "cron"))
import process_logs  # noqa: E402

AWSTATS, TOOLS = process_logs.default_locations("/opt/cioc/tools")
pytestmark = pytest.mark.skipif(not (AWSTATS.is_file() and (TOOLS / "awstats_buildstaticpages.pl").is_file()),
                                reason="AWStats is not installed (bin/setup installs it)")

LINE = ('10.9.8.7 - - [{day:%d/%b/%Y}:23:59:{second:02d} -0500] "GET /volunteer/ HTTP/1.1" '
        '200 512 "-" "Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0"\n')


def run(world, *args, env=None):
    result = run_command([sys.executable, SCRIPT, "-a", "ciocdemo", *args], env or world.env)
    assert_no_traceback(result)
    return result


def stats_of(world):
    return world.directory / "VirtualServers" / "ciocdemo" / "stats"


def month_pages(world):
    """The published month pages, oldest month first: the sample's access logs cover the
    last ten days, so two months early in a month."""
    return sorted(stats_of(world).glob("*/awstats.ciocdemo.html"), key=lambda p: p.parent.name)


def month_page(world):
    """The newest month's page, where yesterday's records are."""
    return month_pages(world)[-1]


def test_logs_are_counted_and_the_pages_published(world):
    logs = sorted((world.directory / "logs" / "ciocdemo").glob("access.log.*"))
    lines = sum(len(p.read_text(encoding="utf-8").splitlines()) for p in logs)
    result = run(world)
    assert result.returncode == 0, result.stderr
    assert f"{len(logs)} log files, {lines:,} new records; pages of " in result.stdout
    index = (stats_of(world) / "index.html").read_text(encoding="utf-8")
    months = {day.strftime("%Y-%m") for day in (datetime.date.today() - datetime.timedelta(days=n)
                                               for n in range(1, 11))}
    assert [page.parent.name for page in month_pages(world)] == sorted(months)
    for page in month_pages(world):
        assert f'href="{page.parent.name}/awstats.ciocdemo.html"' in index
    page = month_page(world).read_text(encoding="utf-8", errors="replace")
    assert "/volunteer/" in page and "Googlebot" in page
    config = world.directory / "state" / "awstats" / "conf" / "awstats.ciocdemo.conf"
    assert 'SiteDomain="ciocdemo"' in config.read_text(encoding="utf-8")
    assert not [p for p in stats_of(world).parent.iterdir() if p.name.startswith(".stats-")]
    if os.name != "nt":  # the web server, another user, must be able to read the pages
        plain = world.directory / "plain"
        plain.mkdir()
        (plain / "file.html").write_text("x", encoding="utf-8")
        for path in (stats_of(world), stats_of(world) / "index.html"):
            expected = plain if path.is_dir() else plain / "file.html"
            assert path.stat().st_mode & 0o777 == expected.stat().st_mode & 0o777, path


def test_a_rerun_counts_nothing_twice_and_a_grown_log_only_its_new_lines(world):
    run(world)
    page = month_page(world)
    built = page.stat().st_mtime_ns
    again = run(world)
    assert again.returncode == 0
    assert "0 log files, 0 new records; pages up to date" in again.stdout
    assert page.stat().st_mtime_ns == built

    newest = max((world.directory / "logs" / "ciocdemo").glob("access.log.*"),
                 key=lambda p: p.stat().st_mtime_ns)
    day = newest.stat().st_mtime
    with open(newest, "a", encoding="utf-8") as handle:
        for second in range(3):
            handle.write(LINE.format(day=datetime.datetime.fromtimestamp(day),
                                     second=second + 1))
    os.utime(newest, (day + 5, day + 5))
    grown = run(world)
    assert grown.returncode == 0, grown.stderr
    assert "1 log files, 3 new records; pages of " in grown.stdout
    assert "Firefox" in month_page(world).read_text(encoding="utf-8", errors="replace")


def test_missing_awstats_is_one_line_with_the_install_hint_and_exit_2(world):
    env = dict(world.env, CIOC_AWSTATS=str(world.directory / "no-awstats.pl"))
    result = run(world, env=env)
    assert result.returncode == 2
    assert "apt-get install awstats" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not stats_of(world).exists()


def test_a_local_edit_of_the_config_stays_until_create_configs(world):
    run(world, "-n")
    config = world.directory / "state" / "awstats" / "conf" / "awstats.ciocdemo.conf"
    assert not config.exists(), "a dry run writes no configuration"
    run(world)
    config.write_text(config.read_text(encoding="utf-8") + "# local edit\n", encoding="utf-8")
    run(world)
    assert "# local edit" in config.read_text(encoding="utf-8")
    run(world, "-c")
    assert "# local edit" not in config.read_text(encoding="utf-8")


def test_a_dry_run_counts_and_builds_nothing(world):
    result = run(world, "--dry-run")
    assert result.returncode == 0
    assert re.search(r"would give AWStats \d+ log files", result.stdout)
    assert not stats_of(world).exists()
    assert not (world.directory / "state" / "awstats" / "data" / "ciocdemo").exists()


def test_a_log_name_that_perl_would_run_as_a_command_is_never_given_to_awstats(world, tmp_path):
    logs = world.directory / "logs" / "ciocdemo"
    marker = tmp_path / "pwned"  # the script runs in tmp_path
    (logs / "access.log.1; touch pwned |").write_text("x\n", encoding="utf-8")
    result = run(world)
    assert result.returncode == 0, result.stderr
    assert not marker.exists()


def test_a_failed_build_leaves_the_published_pages_as_they_were(world, tmp_path):
    run(world)
    page = month_page(world)
    before = page.read_bytes()
    broken = tmp_path / "broken-tools"
    broken.mkdir()
    (broken / "awstats_buildstaticpages.pl").write_text(
        'print "Error: disk full\\n"; exit 1;\n', encoding="utf-8")
    newest = max((world.directory / "logs" / "ciocdemo").glob("access.log.*"),
                 key=lambda p: p.stat().st_mtime_ns)
    with open(newest, "a", encoding="utf-8") as handle:
        handle.write(LINE.format(day=datetime.datetime.fromtimestamp(
            newest.stat().st_mtime), second=30))
    result = run(world, env=dict(world.env, CIOC_AWSTATS_TOOLS=str(broken)))
    assert result.returncode == 1
    assert "Error: disk full" in result.stderr
    assert page.read_bytes() == before
    assert not [p for p in stats_of(world).parent.iterdir() if p.name.startswith(".stats-")]


def test_a_site_whose_stats_folder_is_a_symlink_is_refused(world, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    stats_of(world).symlink_to(elsewhere, target_is_directory=True)
    result = run(world)
    assert result.returncode == 1
    assert "not a plain folder" in result.stderr
    assert list(elsewhere.iterdir()) == []


def test_logs_are_given_oldest_first_and_archives_are_left_out(tmp_path):
    folder = tmp_path / "logs"
    folder.mkdir()
    for index, name in enumerate(["access.log", "access.log.20261101", "access.log.20261030",
                                  "logs-2026-10.zip", "access.log.20261001.gz"]):
        path = folder / name
        path.write_text("x", encoding="utf-8")
        moment = {"access.log": 300, "access.log.20261101": 200}.get(name, 100)
        os.utime(path, (moment, moment))
    names = [path.name for path, _ in process_logs.access_logs(Path(folder), "access.log*")]
    assert names == ["access.log.20261030", "access.log.20261101", "access.log"]


def test_a_stats_folder_that_cannot_be_made_is_one_line_for_that_site(world, tmp_path):
    not_a_folder = tmp_path / "VirtualServers"
    not_a_folder.write_text("a file where the sites' folders should be", encoding="utf-8")
    result = run(world, env=dict(world.env, CIOC_VIRTUALSERVERS_BASE=str(not_a_folder)))
    assert result.returncode == 1
    assert "Not a directory" in result.stderr and str(not_a_folder) in result.stderr


def data_files(world):
    """awstats' data files of the site, one per month."""
    return sorted((world.directory / "state" / "awstats" / "data" / "ciocdemo").glob("awstats*.txt"))


def make_stale(world):
    """Make the months' data newer than their pages, as a night with new records does."""
    later = month_page(world).stat().st_mtime + 60
    for path in data_files(world):
        os.utime(path, (later, later))


def test_a_build_that_fails_while_its_tool_exits_0_publishes_nothing(world, tmp_path):
    """awstats_buildstaticpages.pl passes awstats.pl's raw status (256) to exit, which the
    system cuts to 0: the real tool, given an awstats.pl that fails, must not publish."""
    run(world)
    before = month_page(world).read_bytes()
    failing = tmp_path / "awstats.pl"
    failing.write_text('#!/usr/bin/env perl\n'
                       'if (grep { $_ eq "-update" } @ARGV) { print "Found 0 new qualified records\\n"; exit 0 }\n'
                       'print "Error: the history file is damaged\\n"; exit 1;\n', encoding="utf-8")
    failing.chmod(0o755)  # the build tool runs it directly, as it does the real awstats.pl
    make_stale(world)
    result = run(world, env=dict(world.env, CIOC_AWSTATS=str(failing)))
    assert result.returncode == 1
    assert "Error: the history file is damaged" in result.stderr
    assert month_page(world).read_bytes() == before


def test_files_an_operator_put_in_the_stats_folder_stay(world):
    run(world)
    guard = stats_of(world) / "web.config"
    guard.write_text("<configuration/>", encoding="utf-8")
    month_guard = month_page(world).parent / ".htaccess"
    month_guard.write_text("Require all denied\n", encoding="utf-8")
    make_stale(world)
    result = run(world)
    assert "pages of " in result.stdout, result.stdout
    assert guard.read_text(encoding="utf-8") == "<configuration/>"
    assert month_guard.read_text(encoding="utf-8") == "Require all denied\n"


def test_a_crash_between_the_two_renames_puts_the_published_pages_back(world):
    run(world)
    page = month_page(world).read_bytes()
    os.replace(stats_of(world), stats_of(world).with_name(".stats-old-4242"))
    result = run(world)
    assert result.returncode == 0, result.stderr
    assert "pages up to date" in result.stdout
    assert month_page(world).read_bytes() == page
    assert not [p for p in stats_of(world).parent.iterdir() if p.name.startswith(".stats-")]


@pytest.mark.parametrize("folder", ["conf with space", "conf$(touch injected)"])
def test_a_configuration_folder_the_shell_would_split_or_run_is_refused(world, tmp_path, folder):
    result = run(world, "--config-dir", str(tmp_path / folder))
    assert result.returncode == 2
    assert "AWStats hands it to a shell" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "injected").exists()


def test_another_data_folder_without_create_configs_is_a_warning(world, tmp_path):
    run(world)
    result = run(world, "--data-dir", str(tmp_path / "elsewhere"))
    assert result.returncode == 0
    assert "keeps its history elsewhere" in result.stderr and "-c rewrites it" in result.stderr
