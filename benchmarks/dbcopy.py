"""dbcopy against SQLite's own copy of the same rows, as whole processes, at three scales.

The rows: member 1's CIC_Stats_RSN (the largest table a member's download copies: the
statistics download) in the sample worlds ``small``, ``medium`` and ``large`` (2,255,
69,487 and 876,083 rows of the sample's realistic rows, CIOC's real schema).

- project: ``python downloads/dbcopy.py -a ciocdemo OUT --table CIC_Stats_RSN --where
  "CIC_Stats_RSN=MemberID = 1"``, as the scheduler would run it: the runner, the ODBC
  connection through the world's UDL and the SQLite3 ODBC driver, the catalog, the copy,
  the indexes, the row count check, the file written beside OUT and renamed.
- baseline: ``python -c`` with the stdlib sqlite3 (the same SQLite library): ATTACH the
  source file, the same CREATE TABLE and CREATE INDEX statements (read from dbcopy's own
  output), INSERT ... SELECT of the same columns and rows in one transaction, the indexes
  after loading, the same PRAGMAs (no journal, no sync: both files are built under a work
  name and renamed when whole), COUNT(*), rename.

Both outputs are checked to hold the same schema and the same rows. dbcopy's peak memory
is that of its largest process (``wait4`` reports the largest of a process and the
children it waited for): dbcopy reads a table this large in two reader processes of
26-28 MiB each, which come on top of the figure shown. Targets: dbcopy's
median at least 0.5 of the baseline's speed (ratio baseline / dbcopy >= 0.5) at every
scale; dbcopy's peak memory flat in the table's size (the largest scale's peak within
25 MiB of the smallest's).

``--floor`` also times, against the same baseline, a process that only reads the rows
through ODBC as dbcopy does (``Database.iterate_table``) and writes nothing: the most any
writer behind that read could reach.

    python benchmarks/dbcopy.py [--worlds DIR] [--scale small|medium|large]... [--repeat N]
                                [--floor]

DIR keeps the worlds between runs (DIR/small, DIR/medium, DIR/large; built when missing).
"""

import argparse
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

from harness import Command, compare, verdict

ROOT = Path(__file__).resolve().parent.parent
TABLE = "CIC_Stats_RSN"
CONDITION = "MemberID = 1"
SCALES = ("small", "medium", "large")
TARGET = 0.5
FLAT_MIB = 25

BASELINE = r"""
import json, os, sqlite3, sys
source, output, table, columns, condition, statements = sys.argv[1:7]
statements = json.loads(statements)
work = output + ".work"
connection = sqlite3.connect(work, isolation_level=None)
connection.execute("PRAGMA journal_mode=OFF")
connection.execute("PRAGMA synchronous=OFF")
connection.execute("ATTACH DATABASE ? AS source", (source,))
connection.execute(statements[0])
connection.execute("BEGIN")
connection.execute(f"INSERT INTO main.[{table}] SELECT {columns} FROM source.[{table}] "
                   f"WHERE {condition}")
connection.execute("COMMIT")
for statement in statements[1:]:
    connection.execute(statement)
rows = connection.execute(f"SELECT COUNT(*) FROM main.[{table}]").fetchone()[0]
connection.close()
os.replace(work, output)
print(rows)
"""


FLOOR = r"""
import sys
sys.path.insert(0, sys.argv[1])
import dbcopy
from cioctasks import db, udl
source = db.open_connection(udl.connection_string(sys.argv[2], "SQLite3"), "floor")
table = dbcopy.describe(source, sys.argv[3])
select = ", ".join(dbcopy.quote(c.name) for c in table.columns)
rows = sum(len(batch) for batch in source.iterate_table(
    select, dbcopy.quote(table.name), sys.argv[4], size=dbcopy.BATCH, page=dbcopy.PAGE))
print(rows)
"""


def build_world(folder, scale):
    """Build a one-site sample world at ``scale`` unless ``folder`` already holds one."""
    if (folder / ".cioctasks-sample-world").exists():
        return
    print(f"building the {scale} sample world in {folder}", flush=True)
    subprocess.run([sys.executable, "-m", "cioctasks.sampledb", "create", str(folder),
                    "--sites", "1", "--scale", scale, "--force"], check=True,
                   stdout=subprocess.DEVNULL)


def project_command(world, output):
    # The world's settings only: a CIOC_* variable of the caller's would win over its .env.
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIOC_")}
    env["CIOC_ENV_FILE"] = str(world / ".env")
    return Command("dbcopy.py (ODBC -> SQLite)",
                   [sys.executable, str(ROOT / "downloads" / "dbcopy.py"), "-a", "ciocdemo",
                    str(output), "--table", TABLE, "--where", f"{TABLE}={CONDITION}"], env=env)


def schema_of(path):
    """The CREATE statements of TABLE in a SQLite file: the table's first, then its indexes."""
    with sqlite3.connect(path) as connection:
        rows = connection.execute(
            "SELECT sql FROM sqlite_master WHERE tbl_name = ? AND sql IS NOT NULL "
            "ORDER BY type = 'index', name", (TABLE,)).fetchall()
    return [sql for (sql,) in rows]


def baseline_command(world, output, reference):
    """python -c with sqlite3, writing what dbcopy wrote into ``reference``."""
    import json

    statements = schema_of(reference)
    with sqlite3.connect(reference) as connection:
        columns = [row[1] for row in connection.execute(f"PRAGMA table_info([{TABLE}])")]
    select = ", ".join(f"[{c}]" for c in columns)
    return Command("python -c sqlite3 ATTACH + INSERT...SELECT",
                   [sys.executable, "-c", BASELINE, str(world / "databases" / "ciocdemo.sqlite"),
                    str(output), TABLE, select, CONDITION, json.dumps(statements)])


def floor_command(world):
    """python -c reading the rows through ODBC as dbcopy does, writing nothing."""
    return Command("ODBC read alone (floor)",
                   [sys.executable, "-c", FLOOR, str(ROOT / "downloads"),
                    str(world / "UDLs" / "ciocdemo" / "cron_job_runner.udl"), TABLE, CONDITION])


def check_same(ours, theirs):
    """Raise SystemExit unless both files hold the same schema and the same rows."""
    if schema_of(ours) != schema_of(theirs):
        raise SystemExit(f"different schemas:\n{schema_of(ours)}\n{schema_of(theirs)}")
    with sqlite3.connect(ours) as connection:
        connection.execute("ATTACH DATABASE ? AS theirs", (str(theirs),))
        counts = [connection.execute(f"SELECT COUNT(*) FROM {side}.[{TABLE}]").fetchone()[0]
                  for side in ("main", "theirs")]
        differ = connection.execute(
            f"SELECT COUNT(*) FROM (SELECT * FROM main.[{TABLE}] EXCEPT "
            f"SELECT * FROM theirs.[{TABLE}])").fetchone()[0]
    if counts[0] != counts[1] or differ:
        raise SystemExit(f"different rows: {counts} rows, {differ} of ours not in theirs")
    return counts[0]


def run_scale(worlds, scratch, scale, repeat, floor=False):
    world = worlds / scale
    build_world(world, scale)
    ours, theirs = scratch / f"{scale}-dbcopy.sqlite", scratch / f"{scale}-sqlite.sqlite"
    project = project_command(world, ours)
    project.run()  # the reference for the baseline's statements, and a warm cache
    baseline = baseline_command(world, theirs, ours)
    baseline.run()
    rows = check_same(ours, theirs)
    result = compare(baseline, project, repeat=repeat,
                     title=f"\n{scale}: member 1's {TABLE}, {rows:,} rows, {repeat} runs each")
    check_same(ours, theirs)
    met = verdict(f"{scale}: speed (baseline / dbcopy)", result.ratio, TARGET)
    if floor:
        compare(baseline, floor_command(world), repeat=repeat,
                title=f"{scale}: the ODBC read alone against the same baseline")
    return rows, result, met


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worlds", type=Path, help="keep the sample worlds in this folder")
    parser.add_argument("--scale", action="append", choices=SCALES,
                        help="a scale to run (repeatable; default all three)")
    parser.add_argument("--repeat", type=int, default=5, help="runs of each command")
    parser.add_argument("--floor", action="store_true",
                        help="also time the ODBC read alone against the baseline")
    args = parser.parse_args()
    scales = [s for s in SCALES if s in (args.scale or SCALES)]
    scratch = Path(tempfile.mkdtemp(prefix="cioctasks-bench-"))
    try:
        worlds = args.worlds or scratch / "worlds"
        worlds.mkdir(parents=True, exist_ok=True)
        results = [(scale, *run_scale(worlds, scratch, scale, args.repeat, args.floor))
                   for scale in scales]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"\n{'scale':8} {'rows':>10} {'ratio':>6}  {'speed':9} {'dbcopy MiB':>10} "
          f"{'sqlite3 MiB':>11}")
    for scale, rows, result, met in results:
        print(f"{scale:8} {rows:10,} {result.ratio:6.2f}  {'met' if met else 'NOT MET':9} "
              f"{max(result.project.memory):10.1f} {max(result.baseline.memory):11.1f}")
    peaks = [max(result.project.memory) for _, _, result, _ in results]
    flat = max(peaks) - peaks[0] <= FLAT_MIB
    if len(peaks) > 1:
        print(f"dbcopy's peak memory {peaks[0]:.0f} -> {max(peaks):.0f} MiB "
              f"(target: within {FLAT_MIB} MiB of the smallest scale's) "
              f"{'met' if flat else 'NOT MET'}")
    return 0 if flat and all(met for *_, met in results) else 1


if __name__ == "__main__":
    sys.exit(main())
