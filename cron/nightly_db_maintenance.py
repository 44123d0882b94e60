"""Run CIOC's nightly stored procedure (sp_STP_Nightly_Tasks) on every database.

It moves the usage-stats accumulators into the stats tables, refreshes their caches and
ends the sharing profiles whose revocation date has come. Each database runs with a query
timeout; one that fails or times out is named in the report and the others still run.

The procedure runs with autocommit (``procs`` marks it so): the batches its procedures
commit (10,000 stats rows each) stay committed when a later step fails or the timeout
stops it, and the next night goes on from there. Inside an outer transaction those
commits would only decrement a nesting count, and one failure would undo the whole night.
"""

import sys
import time

import cioctasks


def run_nightly_tasks(database, dry_run, log):
    """Call sp_STP_Nightly_Tasks on an open Database; return the seconds it took.

    Raise DatabaseError, naming how long it ran, if it fails or times out; what its steps
    committed before then stays committed.
    """
    from cioctasks import db

    if dry_run:
        log.info("(dry run) would call sp_STP_Nightly_Tasks")
        return 0.0
    started = time.monotonic()
    try:
        database.call("sp_STP_Nightly_Tasks")
    except db.DatabaseError as error:
        reason = str(error).removeprefix(f"{database.name}: ")
        raise db.DatabaseError(
            f"sp_STP_Nightly_Tasks stopped after {time.monotonic() - started:.1f}s "
            f"(the steps done before stay committed): {reason}") from None
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
