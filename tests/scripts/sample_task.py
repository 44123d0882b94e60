"""A test task: counts members per database, or fails in the way the flags ask."""

import sys
import time

import cioctasks


def count_members(context, name):
    if name in context.args.fail_on:
        raise cioctasks.TaskError(f"asked to fail on {name}")
    if name in context.args.crash_on:
        raise RuntimeError(f"crash on {name} Password=hunter2secret")
    time.sleep(context.args.sleep)
    with context.connect(name) as database:
        rows = database.query("SELECT COUNT(*) AS members FROM STP_Member")
    return f"{rows[0]['members']} {context.prepared}"


def prepare(context):
    """Runs once before the databases: checks --unit and hands it to every database."""
    if not context.args.unit.isalpha():
        raise cioctasks.ConfigError(f"--unit must be a word, not {context.args.unit!r}")
    return context.args.unit


def add_arguments(parser):
    parser.add_argument("--fail-on", action="append", default=[])
    parser.add_argument("--crash-on", action="append", default=[])
    parser.add_argument("--sleep", type=float, default=0)
    parser.add_argument("--unit", default="members")


if __name__ == "__main__":
    sys.exit(cioctasks.run(count_members, add_arguments, per_database=True, prepare=prepare))
