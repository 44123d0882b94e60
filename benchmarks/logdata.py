"""Realistic CIOC server logs for the benchmarks: Python error logs, console logs and web
access logs, deterministic for a seed, written quickly at any size.

What a CIOC site writes (OpenCIOC/onlineresources, ``python/production.ini``):
``error.log`` comes from pyramid_exclog through ``exc_formatter`` (``%(asctime)s
%(message)s``): a line with the time and the request URL, then the traceback, many frames
deep (waitress, pyramid's router and tweens, CIOC's view, SQLAlchemy or pyodbc), the
exception last, sometimes chained. ``console.log`` has the ``generic`` format (time,
level, ``[logger][thread]``, message). Both rotate at midnight into ``name.YYYY-MM-DD``,
and on Windows, where CIOC runs, their lines end in CRLF. Access logs are the combined
format. The text is digit-heavy as real logs are: times, line numbers, record numbers,
view numbers, SQL states, sizes, addresses.

Errors come as real servers see them: most entries belong to a few floods (a bot
requesting a broken page, a database that times out for a minute), the rest are varied,
with record numbers and values in their messages; a few are chained, a few carry a
latin-1 byte, and now and then one holds a huge single line (a statement with thousands
of parameters). No date appears inside a line, so ``grep -c`` of the entry marker counts
exactly the entries.

    python benchmarks/logdata.py error FILE --megabytes 50
"""

import argparse
import datetime
import random

CHUNK = 1 << 20
SITE_NAMES = ("ciocdemo", "kingston", "halton", "york")

# (path, line, function, source line) of the frames every request goes through.
OUTER = [
    (r"D:\CIOC\toolspython\Lib\site-packages\waitress\channel.py", 428, "service",
     "task.service()"),
    (r"D:\CIOC\toolspython\Lib\site-packages\waitress\task.py", 168, "service",
     "self.execute()"),
    (r"D:\CIOC\toolspython\Lib\site-packages\waitress\task.py", 434, "execute",
     "app_iter = self.channel.server.application(environ, start_response)"),
    (r"D:\CIOC\toolspython\Lib\site-packages\pyramid\router.py", 270, "__call__",
     "response = self.execution_policy(environ, self)"),
    (r"D:\CIOC\toolspython\Lib\site-packages\pyramid\router.py", 276, "default_execution_policy",
     "return router.invoke_request(request)"),
    (r"D:\CIOC\toolspython\Lib\site-packages\pyramid\router.py", 245, "invoke_request",
     "response = handle_request(request)"),
    (r"D:\CIOC\toolspython\Lib\site-packages\pyramid_exclog\__init__.py", 118, "exclog_tween",
     "return handler(request)"),
    (r"D:\CIOC\toolspython\Lib\site-packages\pyramid\tweens.py", 43, "excview_tween",
     "response = _error_handler(request, exc)"),
    (r"D:\CIOC\toolspython\Lib\site-packages\pyramid\tweens.py", 17, "_error_handler",
     "reraise(*exc_info)"),
    (r"D:\CIOC\toolspython\Lib\site-packages\pyramid\router.py", 143, "handle_request",
     "response = _call_view("),
    (r"D:\CIOC\toolspython\Lib\site-packages\pyramid\view.py", 674, "_call_view",
     "response = view_callable(context, request)"),
    (r"D:\CIOC\toolspython\Lib\site-packages\pyramid\viewderivers.py", 392, "attr_view",
     "return view(context, request)"),
    (r"D:\CIOC\toolspython\Lib\site-packages\pyramid\viewderivers.py", 370, "predicated_view",
     "return view(context, request)"),
]
VIEWS = [
    (r"D:\CIOC\Sites\{site}\python\cioc\web\cic\details.py", 96, "__call__",
     "sql = self._build_sql(request, viewdata, num)"),
    (r"D:\CIOC\Sites\{site}\python\cioc\web\vol\record.py", 212, "record",
     "view = request.viewdata.vol.ViewType"),
    (r"D:\CIOC\Sites\{site}\python\cioc\web\cic\results.py", 351, "search",
     "page = int(request.params.get('Page', 1))"),
    (r"D:\CIOC\Sites\{site}\python\cioc\web\import_\upload.py", 244, "process_import",
     "text = data.decode('utf-8')"),
    (r"D:\CIOC\Sites\{site}\python\cioc\web\admin\checklists.py", 268, "save",
     "fformat = field.get('format')"),
    (r"D:\CIOC\Sites\{site}\python\cioc\web\gbl\printlist.py", 542, "index",
     "for i, (name, formatter) in enumerate(recordsets):"),
]
DATABASE = [
    (r"D:\CIOC\Sites\{site}\python\cioc\core\connection.py", 112, "get_connection",
     "conn = pyodbc.connect(self.connstr, autocommit=True)"),
    (r"D:\CIOC\Sites\{site}\python\cioc\core\request.py", 301, "connmgr",
     "return self.connmgr.get_connection(name)"),
]
#: (exception, message with {n} for a number and {v} for a value, frames after the view)
ERRORS = [
    ("KeyError", "'ViewType{n}'", []),
    ("ValueError", "invalid literal for int() with base 10: '{v}'", []),
    ("pyodbc.OperationalError", "('HYT00', '[HYT00] [Microsoft][ODBC Driver 17 for SQL Server]"
     "Login timeout expired (0) (SQLDriverConnect)')", DATABASE),
    ("pyodbc.ProgrammingError", "('42000', \"[42000] [Microsoft][ODBC Driver 17 for SQL Server]"
     "[SQL Server]Incorrect syntax near '{v}'. (102) (SQLExecDirectW)\")", DATABASE[1:]),
    ("pyodbc.Error", "('08S01', '[08S01] [Microsoft][ODBC Driver 17 for SQL Server]"
     "Communication link failure (10054) (SQLExecDirectW)')", DATABASE),
    ("UnicodeDecodeError", "'utf-8' codec can't decode byte 0xe9 in position {n}: "
     "invalid continuation byte", []),
    ("AttributeError", "'NoneType' object has no attribute 'ViewType'", []),
    ("TypeError", "unsupported operand type(s) for +: 'int' and 'NoneType'", []),
    ("IndexError", "list index out of range", []),
    ("ZeroDivisionError", "division by zero", []),
    ("mako.exceptions.CompileException", "Fragment 'if x in (' is not a partial control "
     "statement in file 'D:\\CIOC\\Sites\\{site}\\python\\cioc\\web\\templates\\t{n}.mak' "
     "at line: {n} char: 1", []),
]
PAGES = ["/details.asp?NUM={rec}&UseCICVw={view}", "/volunteer/record/{vrec}?UseVOLVw={view}",
         "/results.asp?Page={view}&SortBy=ORG", "/volunteer/results.asp?CMID={n}",
         "/admin/checklists/save?chk=ac&Ln=fr-CA", "/import/upload", "/printlist?IDList={rec}"]


def _frame(path, line, function, source, site):
    return f'  File "{path.format(site=site)}", line {line}, in {function}\n    {source}\n'


def _stacks(site):
    """Every traceback body this site can produce: (exception, message, frames text)."""
    outer = "".join(_frame(*f, site) for f in OUTER)
    stacks = []
    for view in VIEWS:
        for kind, message, inner in ERRORS:
            frames = outer + _frame(*view, site) + "".join(_frame(*f, site) for f in inner)
            stacks.append((kind, message.replace("{site}", site), frames))
    return stacks


class ErrorEntries:
    """Endless entries of one site's error log, in time order."""

    def __init__(self, seed, site="ciocdemo", start=None, seconds_per_entry=0.6, eol="\r\n"):
        self.rng = random.Random(seed)
        self.site, self.eol = site, eol
        self.moment = start or datetime.datetime(2026, 11, 22, 0, 0, 1)
        self.step = seconds_per_entry
        self.stacks = _stacks(site)
        # A few floods: the same error from the same place, over and over.
        self.floods = [self.rng.choice(self.stacks) for _ in range(6)]
        self.flood_values = [(self.rng.randint(1, 99), f"x{self.rng.randint(1, 999)}")
                             for _ in self.floods]

    def _url(self):
        rng = self.rng
        page = rng.choice(PAGES).format(rec=f"ABC{rng.randint(1, 99999):05d}",
                                        vrec=f"V{rng.randint(1, 999999):06d}",
                                        view=rng.randint(1, 40), n=rng.randint(1, 5000))
        return f"https://{self.site}.cioc.ca{page}"

    def next(self):
        """The text of the next entry (a str; it may hold a lone surrogate for a latin-1
        byte, written with ``surrogateescape``)."""
        rng = self.rng
        self.moment += datetime.timedelta(seconds=rng.expovariate(1 / self.step))
        moment = self.moment
        header = f"{moment:%Y-%m-%d %H:%M:%S},{moment.microsecond // 1000:03d} {self._url()}"
        roll = rng.random()
        if roll < 0.7:
            which = rng.randrange(len(self.floods))
            kind, message, frames = self.floods[which]
            number, value = self.flood_values[which]
        else:
            kind, message, frames = rng.choice(self.stacks)
            number, value = rng.randint(0, 99999), f"{rng.choice('abcxyz')}{rng.randint(1, 9999)}"
        message = message.replace("{n}", str(number)).replace("{v}", value)
        body = f"Traceback (most recent call last):\n{frames}{kind}: {message}\n"
        if roll > 0.97:  # chained: the error raised while handling another one
            other_kind, other_message, other_frames = rng.choice(self.stacks)
            body = (body + "\nDuring handling of the above exception, another exception "
                    "occurred:\n\nTraceback (most recent call last):\n" + other_frames
                    + f"{other_kind}: {other_message.replace('{n}', '7').replace('{v}', 'y')}\n")
        if roll > 0.9995:  # a statement with thousands of parameters, on one line
            body += "[SQL: INSERT INTO GBL_BaseTable_History VALUES " + ", ".join(
                f"({rng.randint(1, 99999)}, 'ABC{rng.randint(1, 99999):05d}')"
                for _ in range(8000)) + "]\n"
        if roll < 0.001:
            header += " caf\udce9"  # a latin-1 byte from a client's query string
        text = header + "\n" + body
        return text.replace("\n", self.eol) if self.eol != "\n" else text


def write_error_log(path, megabytes, seed=1, mode="wb", **options):
    """Write about ``megabytes`` MiB of entries (at least one) to ``path``; return (entries,
    bytes written)."""
    entries = ErrorEntries(seed, **options)
    target, count, written, parts, size = megabytes * (1 << 20), 0, 0, [], 0
    with open(path, mode) as handle:
        while not count or written + size < target:
            text = entries.next().encode("utf-8", "surrogateescape")
            parts.append(text)
            size += len(text)
            count += 1
            if size >= CHUNK:
                handle.write(b"".join(parts))
                written, parts, size = written + size, [], 0
        handle.write(b"".join(parts))
    return count, written + size


def console_lines(rng, moment, count, eol="\r\n"):
    levels = ["WARNI", "WARNI", "ERROR", "INFO "]
    loggers = ["cioc.web.cic", "cioc.core.connection", "sqlalchemy.engine", "waitress.queue"]
    messages = ["slow request {n} ms for {url}", "Task queue depth is {n}",
                "connection pool recycled after {n} s", "template cache miss: t{n}.mak"]
    lines = []
    for _ in range(count):
        moment += datetime.timedelta(seconds=rng.expovariate(1 / 5))
        message = rng.choice(messages).format(
            n=rng.randint(1, 50000), url=f"/details.asp?NUM=ABC{rng.randint(1, 99999):05d}")
        lines.append(f"{moment:%Y-%m-%d %H:%M:%S},{moment.microsecond // 1000:03d} "
                     f"{rng.choice(levels)} [{rng.choice(loggers)}][waitress-{rng.randint(0, 7)}] "
                     f"{message}{eol}")
    return "".join(lines), moment


def access_lines(rng, moment, count):
    pages = ["/", "/volunteer/", "/details.asp?NUM=ABC{n:05d}&UseCICVw={v}",
             "/volunteer/record/V{n:06d}", "/results.asp?Page={v}", "/styles/main.css?v={v}",
             "/images/logo.png", "/rpc/record/ABC{n:05d}", "/volunteer/search.asp"]
    agents = ["Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
              "Chrome/120.0.0.0 Safari/537.36",
              "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 "
              "(KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
              "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
              "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)"]
    statuses = [200] * 17 + [304, 404, 500]
    lines = []
    for _ in range(count):
        moment += datetime.timedelta(seconds=rng.expovariate(1 / 0.4))
        page = rng.choice(pages).format(n=rng.randint(1, 99999), v=rng.randint(1, 40))
        referer = "-" if rng.random() < 0.6 else \
            f"https://www.google.com/search?q=q{rng.randint(1, 9999)}"
        lines.append(f"{rng.randint(1, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}."
                     f"{rng.randint(1, 254)} - - [{moment:%d/%b/%Y:%H:%M:%S} -0500] "
                     f"\"GET {page} HTTP/1.1\" {rng.choice(statuses)} {rng.randint(200, 90000)} "
                     f"\"{referer}\" \"{rng.choice(agents)}\"\n")
    return "".join(lines), moment


def write_text_log(path, megabytes, kind, seed=1, start=None):
    """Write about ``megabytes`` MiB of a ``console`` or ``access`` log; return bytes written."""
    rng = random.Random(seed)
    moment = start or datetime.datetime(2026, 10, 1)
    make = console_lines if kind == "console" else access_lines
    target, written = megabytes * (1 << 20), 0
    with open(path, "wb") as handle:
        while written < target:
            text, moment = make(rng, moment, 200)
            data = text.encode("utf-8")
            handle.write(data)
            written += len(data)
    return written


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=("error", "console", "access"))
    parser.add_argument("path")
    parser.add_argument("--megabytes", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if args.kind == "error":
        count, size = write_error_log(args.path, args.megabytes, args.seed)
        print(f"{args.path}: {count:,} entries, {size:,} bytes")
    else:
        size = write_text_log(args.path, args.megabytes, args.kind, args.seed)
        print(f"{args.path}: {size:,} bytes")


if __name__ == "__main__":
    main()
