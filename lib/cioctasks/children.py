"""-j with processes: each database of a run in a child process.

The child is the same script run again with the same arguments (``python script.py
...``), told by CHILD_VARIABLE which one database to run. It takes no lock: it checks
that its parent holds the task's lock, and refuses to run otherwise. It records its run
history row itself and sends its log records, its output and its outcome to the parent
over its standard output (``logs.Channel``); the parent logs, prints, reports, pings and
combines exit codes once for the whole run. A child ends when its parent's end closes its
standard input, so nothing outlives the run, however the parent ends.
"""

import collections
import logging
import os
import sys
import time
from pathlib import Path

from cioctasks import config, logs, taskrun, udl
from cioctasks.errors import FAILED, INTERNAL, TaskError


#: The private variable that makes a run of a script a child of a run with -j: JSON with
#: the parent's pid, the lock the parent holds and the database to run.
CHILD_VARIABLE = "CIOCTASKS_CHILD_OF"


class Children:
    """The child processes of one run: the watchdog and Ctrl-C stop them all."""

    def __init__(self):
        import threading

        self._lock = threading.Lock()
        self._running = []
        self.stopped = None  # why they were stopped (the time limit, Ctrl-C), once they were

    def add(self, process):
        with self._lock:
            if self.stopped:
                process.kill()
            self._running.append(process)

    def remove(self, process):
        with self._lock:
            self._running.remove(process)

    def stop(self, reason):
        """Kill every child, start no more, and wait (a little) for their end."""
        import subprocess

        with self._lock:
            self.stopped = self.stopped or reason
            running = list(self._running)
        for process in running:
            try:
                process.kill()
            except OSError:
                pass
        for process in running:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                pass


def _cores():
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def child_command(task, argv):
    """The command that runs this script again (same interpreter, flags and arguments), or
    None when the task is not the script being run (a task run from a test or another
    program): its databases then run in threads."""
    import subprocess

    main = sys.modules.get("__main__")
    if sys.modules.get(task.__module__) is not main:
        return None
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name:
        target = ["-m", spec.name]
    elif getattr(main, "__file__", None):
        target = [os.path.abspath(main.__file__)]
    else:
        return None
    executable = sys.executable
    if os.name == "nt" and os.path.basename(executable).lower() == "pythonw.exe":
        # pythonw.exe gives a child no standard streams to report on: python.exe, without
        # a window, does.
        console = os.path.join(os.path.dirname(executable), "python.exe")
        executable = console if os.path.exists(console) else executable
    arguments = sys.argv[1:] if argv is None else list(argv)
    return [executable, *subprocess._args_from_interpreter_flags(), *target, *arguments]


def run_children(command, job, context, databases, jobs, children):
    """Run each database in a child process, at most ``jobs`` at a time and no more than
    the machine's cores (more would not run Python faster, and each costs its own memory);
    return the outcomes in the order of ``databases``."""
    import threading

    workers = max(1, min(jobs, len(databases), _cores()))
    slots = threading.BoundedSemaphore(workers)
    outcomes = {}

    def one(name):
        try:
            outcomes[name] = _run_child(command, job, context, name, children)
        except Exception as error:  # a bug here must not lose the database's result
            context.log.error("internal error: %s", error, exc_info=True)
            outcomes[name] = taskrun.Outcome(name, "error", INTERNAL, f"internal error: {error}", 0.0)
        finally:
            slots.release()

    threads = []
    try:
        for name in databases:
            while not slots.acquire(timeout=0.5):  # a wait Ctrl-C can interrupt
                pass
            if children.stopped:
                slots.release()
                break
            thread = threading.Thread(target=one, args=(name,), name=f"database {name}",
                                      daemon=True)
            thread.start()
            threads.append(thread)
        for thread in threads:
            while thread.is_alive():
                thread.join(0.5)
    except BaseException:  # Ctrl-C: the children end with the run, recorded as killed
        children.stop("interrupted")
        context.state.kill_open_runs("killed: the run was interrupted")
        raise
    return [outcomes.get(name) or taskrun.Outcome(name, "failed", FAILED,
                                          f"not started: {children.stopped}", 0.0)
            for name in databases]


def _run_child(command, job, context, name, children):
    """Run one database in a child process; return its taskrun.Outcome. A child that ends without
    one (killed, crashed) is a failed database, its run history row says so."""
    import json
    import subprocess
    import threading

    token = logs.current_database.set(name)
    started = time.monotonic()
    log = context.log
    environ = dict(os.environ)
    environ[CHILD_VARIABLE] = json.dumps({"pid": os.getpid(), "lock": job.lock,
                                          "database": name})
    try:
        process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=environ, creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0))
    except OSError as error:
        summary = f"cannot start its process: {error.strerror or error}"
        log.error("%s", summary)
        logs.current_database.reset(token)
        return taskrun.Outcome(name, "failed", FAILED, summary, 0.0)
    children.add(process)
    last_errors = collections.deque(maxlen=3)

    def read_stderr():  # what the child wrote outside the runner (a crash at import)
        logs.current_database.set(name)
        for raw in process.stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            if line:
                last_errors.append(udl.mask(line, context.settings.secrets()))
                log.warning("%s", last_errors[-1])

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    outcome, run_id = None, None
    for raw in process.stdout:
        try:
            message = json.loads(raw)
        except ValueError:
            log.warning("%s", udl.mask(raw.decode("utf-8", "replace").rstrip(),
                                       context.settings.secrets()))
            continue
        if "log" in message:
            logs.replay(log, message["log"])
        elif "out" in message or "err" in message:
            stream = sys.stdout if "out" in message else sys.stderr
            stream.write(message.get("out") or message.get("err"))
        elif "run" in message:
            run_id = message["run"]
            context.state.open_runs[run_id] = name  # the time limit records it as killed
        elif "outcome" in message:
            outcome = taskrun.Outcome(**message["outcome"])
    code = process.wait()
    reader.join(5)
    children.remove(process)
    if outcome is None and children.stopped:
        outcome = taskrun.Outcome(name, "killed", FAILED, children.stopped, time.monotonic() - started)
    elif outcome is None:
        how = f"killed by signal {-code}" if code < 0 else f"exit {code}"
        detail = f": {last_errors[-1]}" if last_errors else ""
        summary = f"its process ended without a result ({how}){detail}"
        log.error("%s", summary)
        if run_id is not None:
            try:
                context.state.finish_run(run_id, "failed", FAILED, summary)
            except TaskError as error:
                log.error("%s", error)
        outcome = taskrun.Outcome(name, "failed", FAILED, summary, time.monotonic() - started)
    else:
        context.state.open_runs.pop(run_id, None)
    logs.current_database.reset(token)
    return outcome


def parent_of(job, environ):
    """What the parent told a child process (CHILD_VARIABLE), or None for any other run.
    The variable is taken out of the environment: what the task starts is no child of
    ours."""
    import json

    text = os.environ.pop(CHILD_VARIABLE, None)
    if environ is not None:
        text = environ.pop(CHILD_VARIABLE, None) or text
    if not text or not job.per_database or job.command:
        return None
    try:
        parent = json.loads(text)
    except ValueError:
        return None
    return parent if isinstance(parent, dict) and parent.get("lock") == job.lock else None


def run_as_child(job, args, usage_error, environ, parent):
    """Run the one database the parent named and report to it (see CHILD_VARIABLE);
    return the database's exit code."""
    import signal
    import threading
    import traceback

    from cioctasks import lock as locking
    from cioctasks import state as run_state

    channel = logs.Channel(sys.__stdout__.buffer)
    sys.stdout = logs.ChannelStream(channel, "out")
    sys.stderr = logs.ChannelStream(channel, "err")
    if os.name != "nt":
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle

    def watch_parent():  # its end, however it ends, closes our standard input
        try:
            while os.read(0, 512):  # the file descriptor: a buffered read would hold a lock
                pass
        finally:
            os._exit(FAILED)

    threading.Thread(target=watch_parent, daemon=True).start()
    name = parent["database"]
    started = time.monotonic()
    state = settings = None
    try:
        settings = config.load(environ)
        log = logs.setup_child(channel, settings.secrets())
        if usage_error is not None:
            raise usage_error
        if os.name != "nt" and os.getppid() != parent["pid"]:
            raise TaskError("the run that started this process is gone: not run")
        if not locking.TaskLock(Path(settings.state_dir) / "locks", job.lock).is_held():
            raise TaskError(f"the run that started this process (pid {parent['pid']}) does "
                            f"not hold the lock of {job.lock}: not run")
        state = run_state.State.open(settings)
        context = taskrun.Context(task=job.name, args=args, settings=settings, log=log, state=state)
        if job.prepare is not None:
            context.prepared = job.prepare(context)
        outcome = taskrun._run_one(job.task, context.for_database(name), name,
                           on_start=lambda run_id: channel.send(run=run_id))
    except TaskError as error:
        outcome = taskrun.Outcome(name, "failed", error.exit_code or FAILED, str(error),
                          time.monotonic() - started)
    except Exception as error:
        secrets = settings.secrets() if settings is not None else ()
        channel.send(err=udl.mask(traceback.format_exc(), secrets))
        outcome = taskrun.Outcome(name, "error", INTERNAL, udl.mask(
            f"internal error: {error.__class__.__name__}: {error}", secrets),
            time.monotonic() - started)
    finally:
        if state is not None:
            state.close()
    channel.send(outcome=vars(outcome))
    logging.shutdown()
    return outcome.exit_code
