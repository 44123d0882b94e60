"""update_offline_tools_map: the JSON map the offline tools read."""

import json
import sqlite3
import sys

from cioctasks.sampledb import schema
from conftest import ROOT, assert_no_traceback, run_command

SCRIPT = ROOT / "cron" / "update_offline_tools_map.py"
sys.path.insert(0, str(ROOT / "cron"))
import update_offline_tools_map as otmap  # noqa: E402


def output(world):
    return world.directory / "tools" / "offline_tools" / "ot_secure_host_mapping.json"


def test_the_map_lists_every_name_under_its_secure_host(world):
    result = run_command([sys.executable, SCRIPT], world.env)
    assert result.returncode == 0, result.stderr
    assert_no_traceback(result)
    mapping = json.loads(output(world).read_text(encoding="utf-8"))
    assert mapping["ciocdemo.cioc.ca"] == ["ciocdemo.cioc.ca", "www.ciocdemo1example.org"]
    assert mapping["ciocnord-fr.cioc.ca"] == ["benevoles.ciocnord1.example.qc.ca", "ciocnord-fr.cioc.ca"]
    assert all(host == host.lower() for hosts in mapping.values() for host in hosts)
    assert "added: ciocdemo-fr.cioc.ca" in result.stdout
    log = (world.directory / "logs" / "cioctasks" / "update_offline_tools_map.log").read_text(
        encoding="utf-8")
    assert "only.ciocdemo.example.net left out" in log
    assert not any("only.ciocdemo.example.net" in hosts for hosts in mapping.values())


def test_an_unchanged_map_is_not_rewritten(world):
    run_command([sys.executable, SCRIPT], world.env)
    before = output(world).stat().st_mtime_ns
    again = run_command([sys.executable, SCRIPT], world.env)
    assert "unchanged" in again.stdout and "added: none; removed: none" in again.stdout
    assert output(world).stat().st_mtime_ns == before


def test_one_database_with_a_changed_name_keeps_the_others_entries(world):
    run_command([sys.executable, SCRIPT], world.env)
    with sqlite3.connect(world.database("ciocdemo")) as connection:
        connection.execute("UPDATE GBL_View_DomainMap SET DomainName = 'ciocdemo-new.cioc.ca' "
                           "WHERE DomainName = 'ciocdemo-fr.cioc.ca'")
    result = run_command([sys.executable, SCRIPT, "-a", "ciocdemo"], world.env)
    assert result.returncode == 0, result.stderr
    assert "added: ciocdemo-new.cioc.ca; removed: ciocdemo-fr.cioc.ca" in result.stdout
    mapping = json.loads(output(world).read_text(encoding="utf-8"))
    assert "ciocnord.cioc.ca" in mapping and "ciocdemo-new.cioc.ca" in mapping


def test_a_name_claimed_by_two_groups_is_an_error_not_a_guess(world):
    with sqlite3.connect(world.database("ciocnord")) as connection:
        schema.insert(connection, "GBL_View_DomainMap", MemberID=1, SecondaryName=0,
                      DomainName="WWW.CiocDemo1Example.org", DefaultLangID=0)
    result = run_command([sys.executable, SCRIPT], world.env)
    assert result.returncode == 1
    assert_no_traceback(result)
    assert "www.ciocdemo1example.org is claimed by ciocdemo member 1 and ciocnord member 1" in result.stderr
    mapping = json.loads(output(world).read_text(encoding="utf-8"))
    assert not any("www.ciocdemo1example.org" in hosts for hosts in mapping.values())


def test_secure_names_are_exactly_one_label_under_the_domain():
    assert otmap.is_secure_name("site.cioc.ca", "cioc.ca")
    assert not otmap.is_secure_name("a.site.cioc.ca", "cioc.ca")
    assert not otmap.is_secure_name("cioc.ca", "cioc.ca")
    assert not otmap.is_secure_name("evilcioc.ca", "cioc.ca")


def test_hostile_names_are_reported_and_left_out():
    groups = {("db", 1, False): ["site.cioc.ca", "bad name\r\n.example.org", "../etc"]}
    mapping, _, _, errors = otmap.build_map(groups, "cioc.ca")
    assert mapping == {"site.cioc.ca": ["site.cioc.ca"]}
    assert len(errors) == 2


def test_a_dry_run_writes_nothing(world):
    result = run_command([sys.executable, SCRIPT, "-n"], world.env)
    assert result.returncode == 0 and "would write" in result.stdout
    assert not output(world).exists()


def test_an_output_path_that_is_a_folder_fails_in_one_line(world, tmp_path):
    result = run_command([sys.executable, SCRIPT, "--output", tmp_path], world.env)
    assert result.returncode == 1
    assert_no_traceback(result)
    assert f"Is a directory: {tmp_path}" in result.stderr
    assert "internal error" not in result.stderr
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    log = world.directory / "logs" / "cioctasks" / "update_offline_tools_map.log"
    assert "Traceback" in log.read_text(encoding="utf-8")  # for whoever digs further
