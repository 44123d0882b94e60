"""Run CIOC's nightly stored procedure (sp_STP_Nightly_Tasks) on every database.

It moves the usage-stats accumulators into the stats tables, refreshes their caches and
ends the sharing profiles whose revocation date has come. Each database runs with a query
timeout; one that fails or times out is named in the report and the others still run.
"""

import sys
import time

import cioctasks


def run_nightly_tasks(database, dry_run, log):
    """Call sp_STP_Nightly_Tasks on an open Database; return the seconds it took."""
    if dry_run:
        log.info("(dry run) would call sp_STP_Nightly_Tasks")
        return 0.0
    started = time.monotonic()
    database.call("sp_STP_Nightly_Tasks")
    return time.monotonic() - started


def task(context, name):
    with context.connect(name, query_timeout=context.args.timeout) as database:
        seconds = run_nightly_tasks(database, context.dry_run, context.log)
    if context.dry_run:
        return "would call sp_STP_Nightly_Tasks"
    return f"sp_STP_Nightly_Tasks done in {seconds:.1f}s"


def add_arguments(parser):
    parser.add_argument("--timeout", type=cioctasks.number(1, 7 * 86400), default=3600, metavar="SECONDS",
                        help="query timeout per database (default 3600)")


if __name__ == "__main__":
    sys.exit(cioctasks.run(task, add_arguments, per_database=True))
