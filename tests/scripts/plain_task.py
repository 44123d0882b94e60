"""A test task without databases: sleeps, prints, or fails as the flags ask."""

import sys
import time

import cioctasks


def work(context):
    print("stray output from the task")
    time.sleep(context.args.sleep)
    if context.args.fail:
        raise cioctasks.TaskError("the work failed: Password=hunter2secret")
    if context.args.crash:
        raise ZeroDivisionError("crashed on purpose")
    return "work done"


def add_arguments(parser):
    parser.add_argument("--sleep", type=float, default=0)
    parser.add_argument("--fail", action="store_true")
    parser.add_argument("--crash", action="store_true")


if __name__ == "__main__":
    sys.exit(cioctasks.run(work, add_arguments))
