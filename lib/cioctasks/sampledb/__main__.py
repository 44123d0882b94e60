"""Build a sample CIOC world: SQLite databases with CIOC's schema, reached through real
UTF-16 UDL files and the SQLite3 ODBC driver, and the site folders, logs and .env the tasks
work on.

    python -m cioctasks.sampledb create DIR [--sites N] [--scale small|medium|large]
                                            [--seed S] [--force] [--getinvolved SITE]

DIR must be new or empty; --force replaces it only when it is a sample world (create
writes a .cioctasks-sample-world file into it): any other folder is left alone.
"""

import argparse
import sqlite3
import sys
import time

from cioctasks.errors import ConfigError
from cioctasks.sampledb import generate, world

COUNTED = ["STP_Member", "GBL_BaseTable", "VOL_Opportunity", "VOL_Profile", "CIC_Stats_RSN",
           "VOL_Stats_OPID", "CIC_Stats_RSN_Accumulator"]


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m cioctasks.sampledb", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create", help="write a sample world into DIR",
                                 description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    create.add_argument("directory", metavar="DIR",
                        help="the folder to build the world in (new, empty, or a sample world "
                             "with --force)")
    create.add_argument("--sites", type=int, default=2, help="number of sites (default 2)")
    create.add_argument("--scale", choices=list(generate.SCALES), default="small",
                        help="how many organizations, opportunities, profiles and stats rows "
                             "each site gets (default small)")
    create.add_argument("--seed", type=int, default=1,
                        help="the seed of the generator: the same seed and day give the same "
                             "rows (default 1)")
    create.add_argument("--force", action="store_true",
                        help="replace DIR when it holds a sample world (never another folder)")
    create.add_argument("--getinvolved", action="append", default=[], metavar="SITE",
                        help="build SITE as a CIOC database from before GetInvolved was "
                             "removed (2022), with its tables and procedures (repeatable)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        built = world.create(args.directory, args.sites, args.scale, args.seed, args.force,
                             getinvolved=tuple(args.getinvolved))
    except ConfigError as error:
        print(f"sampledb: error: {error}", file=sys.stderr)
        return error.exit_code
    except OSError as error:  # the disk filled, a file could not be written
        where = f": {error.filename}" if error.filename else ""
        print(f"sampledb: error: {error.strerror or error}{where}", file=sys.stderr)
        return 1
    seconds = time.monotonic() - started
    print(f"sample world in {built.directory} ({args.scale}, seed {args.seed}, {seconds:.1f}s)")
    for site in built.sites:
        with sqlite3.connect(built.database(site)) as connection:
            counts = ", ".join(
                f"{table} {connection.execute(f'SELECT COUNT(*) FROM {table}').fetchone()[0]}"
                for table in COUNTED)
        print(f"  {site}: {counts}")
    print(f"  settings: CIOC_ENV_FILE={built.env_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
