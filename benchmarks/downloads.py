"""The largest member download at sample scale ``large``: copy and pack.

1. Copy member 1's CIC_Stats_RSN (over 1,000,000 rows) with dbcopy through ODBC into a new
   SQLite file, against SQLite's own ATTACH + INSERT ... SELECT of the same rows, same run.
   Targets: at least 0.3 of SQLite's rows per second; peak memory under 200 MB.
2. Pack that file with archive.pack (AES-256 zip) against ``7z a -tzip -mem=AES256`` at a
   comparable level. Target: no slower than 1.5x.
3. Member 1's whole record downloads (CIC and VOL) by the download rules of
   config/downloads.py: reading the schema and computing the rules, then dbcopy of every
   table the rules copy with their row conditions (subqueries several foreign keys deep),
   and SQLite's own ``CREATE TABLE ... AS SELECT`` of the same columns and rows, same run.
   Targets: rules under 1 s; SQLite's copy under the conditions under 2 s per flavour
   (the conditions stay cheap). dbcopy's time is shown beside it: it also reads the
   catalog, builds indexes and checks the count of each of some 300 tables.

    python benchmarks/downloads.py [--world DIR]   (DIR: an existing large world to reuse)
"""

import argparse
import json
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONDITION = "MemberID = 1"

CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
import dbcopy
from cioctasks import db, udl
source = db.open_connection(udl.connection_string(sys.argv[2], "SQLite3"), "bench")
started = time.perf_counter()
target = dbcopy.SqliteTarget(sys.argv[3])
rows = dbcopy.copy_table(source, target, dbcopy.describe(source, "CIC_Stats_RSN"), sys.argv[4])
target.close()
seconds = time.perf_counter() - started
print(json.dumps({"rows": rows, "seconds": seconds,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


MEMBER_CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
import dbcopy, newdownloads, rules
from cioctasks import db, udl
source = db.open_connection(udl.connection_string(sys.argv[2], "SQLite3"), "bench")
config = newdownloads.load_config(newdownloads.DEFAULT_CONFIG)
started = time.perf_counter()
schema = rules.Schema.read(source, dbcopy.list_tables(source), config)
scopes = rules.compute_scopes(config, schema)
result = {"rules": time.perf_counter() - started, "flavours": {}}
described = {}
for flavour in ("CIC", "VOL"):
    copies = rules.copy_plan(
        rules.record_plan(config, schema, flavour, scopes), 1, 2026)
    started = time.perf_counter()
    target = dbcopy.SqliteTarget(f"{sys.argv[3]}/{flavour}.sqlite")
    counts = dbcopy.copy_database(source, target, copies, described=described)
    target.close()
    result["flavours"][flavour] = {"seconds": time.perf_counter() - started,
                                   "rows": sum(counts.values()), "copies": copies}
print(json.dumps(result))
"""


def build_world(directory):
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "cioctasks.sampledb", "create", str(directory),
                    "--sites", "1", "--scale", "large", "--force"], check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def copy_with_dbcopy(world, output):
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(ROOT / "downloads"),
         str(world / "UDLs" / "ciocdemo" / "cron_job_runner.udl"), str(output), CONDITION],
        check=True, capture_output=True, text=True)
    return json.loads(result.stdout)


def copy_with_sqlite(world, output):
    started = time.perf_counter()
    connection = sqlite3.connect(output, isolation_level=None)
    connection.execute("PRAGMA journal_mode=OFF")
    connection.execute("PRAGMA synchronous=OFF")
    connection.execute("ATTACH DATABASE ? AS source", (str(world / "databases" / "ciocdemo.sqlite"),))
    connection.execute("CREATE TABLE CIC_Stats_RSN AS SELECT * FROM source.CIC_Stats_RSN WHERE 0")
    connection.execute("BEGIN")
    rows = connection.execute(
        f"INSERT INTO CIC_Stats_RSN SELECT * FROM source.CIC_Stats_RSN WHERE {CONDITION}").rowcount
    connection.execute("COMMIT")
    connection.execute("CREATE INDEX ix ON CIC_Stats_RSN (MemberID, AccessDate)")
    connection.close()
    return {"rows": rows, "seconds": time.perf_counter() - started}


def member_downloads(world, folder):
    """Member 1's CIC and VOL downloads by the rules: dbcopy, then SQLite's own copy."""
    result = subprocess.run(
        [sys.executable, "-c", MEMBER_CHILD, str(ROOT / "downloads"),
         str(world / "UDLs" / "ciocdemo" / "cron_job_runner.udl"), str(folder)],
        check=True, capture_output=True, text=True)
    ours = json.loads(result.stdout)
    import fnmatch

    for flavour, measured in ours["flavours"].items():
        connection = sqlite3.connect(world / "databases" / "ciocdemo.sqlite")
        connection.execute("ATTACH DATABASE ? AS copy", (str(folder / f"{flavour}-sqlite.sqlite"),))
        connection.execute("PRAGMA copy.journal_mode=OFF")
        connection.execute("PRAGMA copy.synchronous=OFF")
        started = time.perf_counter()
        rows = 0
        for table, condition, skip in measured["copies"]:
            columns = [r[1] for r in connection.execute(f"PRAGMA main.table_info([{table}])")
                       if not any(fnmatch.fnmatchcase(r[1], p) for p in skip)]
            select = ", ".join(f"[{c}]" for c in columns)
            where = f" WHERE {condition}" if condition else ""
            # NOT INDEXED as dbcopy reads the sample: through the index on both of
            # GBL_BT_LOCATION_SERVICE's numbers SQLite would try every pair of the member's
            # records (minutes at this scale).
            connection.execute(f"CREATE TABLE copy.[{table}] AS SELECT {select} "
                               f"FROM main.[{table}] NOT INDEXED{where}")
            rows += connection.execute(f"SELECT COUNT(*) FROM copy.[{table}]").fetchone()[0]
        measured["sqlite_seconds"] = time.perf_counter() - started
        measured["sqlite_rows"] = rows
        connection.close()
    return ours


def pack_both(database, folder):
    from cioctasks import archive

    password = "Benchmark#2026"
    started = time.perf_counter()
    ours = archive.pack(folder / "ours.zip", [database], password, level=5)
    ours_seconds = time.perf_counter() - started
    started = time.perf_counter()
    subprocess.run(["7z", "a", "-tzip", "-mem=AES256", "-mx=5", "-mmt=1", f"-p{password}",
                    str(folder / "7z.zip"), str(database)], check=True, stdout=subprocess.DEVNULL)
    seven_seconds = time.perf_counter() - started
    return ours_seconds, ours, seven_seconds, (folder / "7z.zip").stat().st_size


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", type=Path, help="reuse this large sample world")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="cioctasks-bench-"))
    try:
        world = args.world
        if world is None:
            world = scratch / "world"
            print(f"building a large sample world: {build_world(world):.1f}s")
        ours = copy_with_dbcopy(world, scratch / "ours.sqlite")
        baseline = copy_with_sqlite(world, scratch / "sqlite.sqlite")
        assert ours["rows"] == baseline["rows"], (ours["rows"], baseline["rows"])
        ours_rate = ours["rows"] / ours["seconds"]
        base_rate = baseline["rows"] / baseline["seconds"]
        print(f"copy of {ours['rows']:,} rows")
        print(f"  dbcopy through ODBC      {ours['seconds']:7.2f}s  {ours_rate:12,.0f} rows/s  "
              f"peak {ours['peak_mb']:.0f} MB")
        print(f"  SQLite ATTACH + INSERT   {baseline['seconds']:7.2f}s  {base_rate:12,.0f} rows/s")
        print(f"  ratio {ours_rate / base_rate:.2f} of SQLite's speed (target >= 0.3); "
              f"peak memory target < 200 MB")
        if shutil.which("7z"):
            seconds, size, seven, seven_size = pack_both(scratch / "ours.sqlite", scratch)
            print(f"pack of {(scratch / 'ours.sqlite').stat().st_size / 1e6:.0f} MB")
            print(f"  archive.pack (AES-256 zip, verified)  {seconds:6.2f}s  {size / 1e6:6.1f} MB")
            print(f"  7z a -tzip -mem=AES256 -mx=5          {seven:6.2f}s  {seven_size / 1e6:6.1f} MB")
            print(f"  ratio {seconds / seven:.2f} of 7z's time (target <= 1.5)")
        member = member_downloads(world, scratch)
        print(f"member 1's record downloads by the rules (rules: {member['rules']:.2f}s, "
              "target < 1 s)")
        for flavour, measured in member["flavours"].items():
            assert measured["rows"] == measured["sqlite_rows"], (flavour, measured["rows"])
            print(f"  {flavour}: {len(measured['copies'])} tables, {measured['rows']:,} rows: "
                  f"SQLite {measured['sqlite_seconds']:.2f}s (target < 2 s), "
                  f"dbcopy {measured['seconds']:.2f}s")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
