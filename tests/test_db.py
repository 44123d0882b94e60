"""The db module through the real ODBC path: a UTF-16 UDL, unixODBC, the SQLite3 driver."""

import datetime
import sqlite3

import pytest

from cioctasks import config, db
from cioctasks.errors import ConfigError


def make_site(udl_base, name, database_path, udl_name="cron_job_runner.udl"):
    folder = udl_base / name
    folder.mkdir(parents=True)
    init = (
        "Provider=MSDASQL.1;Persist Security Info=False;"
        f'Extended Properties="Driver=SQLite3;Database={database_path}"'
    )
    text = "[oledb]\r\n; Everything after this line is an OLE DB initstring\r\n" + init + "\r\n"
    (folder / udl_name).write_bytes(text.encode("utf-16"))


@pytest.fixture
def sites(tmp_path):
    path = tmp_path / "site.sqlite"
    with sqlite3.connect(path) as connection:
        connection.executescript(
            """CREATE TABLE STP_Member (MemberID INTEGER PRIMARY KEY, DatabaseCode TEXT,
                   LastVolProfileEmailDate DATETIME);
               INSERT INTO STP_Member VALUES (1, 'Démo ÉTÉ', '2026-11-20 00:00:00.000');
               INSERT INTO STP_Member VALUES (2, NULL, NULL);"""
        )
    base = tmp_path / "UDLs"
    make_site(base, "ciocdemo", path)
    make_site(base, "CiocNord", path, udl_name="CRON_JOB_RUNNER.UDL")
    (base / "ciocnoudl").mkdir()  # a site whose UDL is missing
    (base / ".trash").mkdir()  # hidden: not a site
    settings = config.from_mapping({"CIOC_UDL_BASE": str(base), "CIOC_ODBC_DRIVER": "SQLite3",
                                    "CIOC_TOOLS_PATH": str(tmp_path)})
    return settings, path


def test_databases_are_the_folders_under_the_udl_base_but_hidden_ones(sites):
    settings, _ = sites
    assert db.list_databases(settings.udl_base) == ["ciocdemo", "CiocNord", "ciocnoudl"]
    assert db.select_databases(settings.udl_base, []) == ["ciocdemo", "CiocNord", "ciocnoudl"]
    assert db.select_databases(settings.udl_base, ["CIOCNORD"]) == ["CiocNord"]


def test_a_site_whose_udl_is_missing_is_known_to_a_and_fails_naming_what_is_missing(sites):
    settings, _ = sites
    assert db.select_databases(settings.udl_base, ["ciocnoudl"]) == ["ciocnoudl"]
    with pytest.raises(ConfigError, match=r"no cron_job_runner\.udl in .*ciocnoudl"):
        db.connect("ciocnoudl", settings)


def test_a_udl_that_is_a_folder_fails_naming_it(sites):
    settings, _ = sites
    (settings.udl_base / "ciocnoudl" / "Cron_Job_Runner.udl").mkdir()
    assert "ciocnoudl" in db.list_databases(settings.udl_base)
    with pytest.raises(ConfigError, match=r"Cron_Job_Runner\.udl is a folder, not a UDL file"):
        db.connect("ciocnoudl", settings)


def test_an_unknown_database_is_a_config_error_listing_the_known_ones(sites):
    settings, _ = sites
    with pytest.raises(ConfigError) as error:
        db.select_databases(settings.udl_base, ["ciocdemo", "nosuch"])
    assert str(error.value) == "unknown database nosuch; known: ciocdemo, CiocNord, ciocnoudl"


def test_rows_come_back_as_dicts_with_unicode_nulls_and_datetimes(sites):
    settings, _ = sites
    with db.connect("ciocdemo", settings) as database:
        assert database.backend == "sample"
        rows = database.query("SELECT * FROM STP_Member ORDER BY MemberID")
    assert rows[0] == {
        "MemberID": 1,
        "DatabaseCode": "Démo ÉTÉ",
        "LastVolProfileEmailDate": datetime.datetime(2026, 11, 20),
    }
    assert rows[1]["DatabaseCode"] is None


def test_bound_datetimes_compare_with_stored_dates(sites):
    settings, _ = sites
    with db.connect("ciocdemo", settings) as database:
        rows = database.query(
            "SELECT MemberID FROM STP_Member WHERE LastVolProfileEmailDate < ?",
            datetime.datetime(2026, 11, 21, 8, 30),
        )
        changed = database.execute(
            "UPDATE STP_Member SET LastVolProfileEmailDate = ? WHERE MemberID = 2",
            datetime.datetime(2026, 11, 22, 1, 2, 3, 456000),
        )
        again = database.query("SELECT LastVolProfileEmailDate AS d FROM STP_Member WHERE MemberID = 2")
    assert rows == [{"MemberID": 1}]
    assert changed == 1
    assert again[0]["d"] == datetime.datetime(2026, 11, 22, 1, 2, 3, 456000)


def test_batches_stream_a_query_in_fixed_sizes(sites):
    settings, _ = sites
    with db.connect("ciocdemo", settings) as database:
        batches = list(database.iterate("SELECT MemberID FROM STP_Member", size=1))
    assert [columns for columns, _ in batches] == [["MemberID"], ["MemberID"]]
    assert [len(rows) for _, rows in batches] == [1, 1]


def test_a_failing_statement_is_a_database_error_naming_the_database(sites):
    settings, _ = sites
    with db.connect("ciocdemo", settings) as database:
        with pytest.raises(db.DatabaseError) as error:
            database.query("SELECT * FROM no_such_table")
    assert str(error.value).startswith("ciocdemo: ")
    assert "no_such_table" in str(error.value)


def test_a_driver_that_does_not_exist_is_a_clear_error_without_the_password(tmp_path):
    with pytest.raises(db.DatabaseError) as error:
        db.open_connection("Driver={No Such Driver};Server=x;UID=u;PWD=topsecret", "site")
    assert "site: cannot connect" in str(error.value)
    assert "topsecret" not in str(error.value)


def test_a_driver_that_is_not_installed_names_the_setting_that_chose_it(sites, tmp_path):
    settings, _ = sites
    folder = settings.udl_base / "ciocsql"
    folder.mkdir()
    init = "Provider=SQLOLEDB.1;Data Source=db.example.org;Initial Catalog=cioc;User ID=u;Password=topsecret"
    (folder / "cron_job_runner.udl").write_bytes(f"[oledb]\r\n{init}\r\n".encode("utf-16"))
    with pytest.raises(db.DatabaseError) as error:
        db.connect("ciocsql", settings.replace(odbc_driver="ODBC Driver 18 for SQL Server"))
    message = str(error.value)
    assert message.startswith("ciocsql: cannot connect: ODBC driver 'ODBC Driver 18 for SQL Server'"
                              " is not installed (installed: ")
    assert "SQLite3" in message and "set CIOC_ODBC_DRIVER to one of them" in message
    assert "topsecret" not in message


def test_named_placeholders_become_question_marks_in_order_and_numbers_are_written_in():
    sql, values = db._placeholders(
        "SELECT :MemberID, ':literal', :Date, :Name, :MemberID, :On, 1-:Minus, :Huge",
        {"MemberID": 3, "Date": "d", "Name": "1; DROP TABLE x", "On": True, "Minus": -5,
         "Huge": 2**70})
    assert sql == "SELECT (3), ':literal', ?, ?, (3), (1), 1-(-5), ?"
    assert values == ["d", "1; DROP TABLE x", 2**70]


def test_the_backend_follows_the_driver():
    assert db.backend_of("Driver=SQLite3;Database=x") == "sample"
    assert db.backend_of("Driver={ODBC Driver 18 for SQL Server};Server=x") == "mssql"
    assert db.backend_of("DSN=CIOC") == "mssql"


def test_a_table_is_read_whole_in_pages_with_its_condition(sites):
    settings, path = sites
    with sqlite3.connect(path) as connection:
        connection.executemany("INSERT INTO STP_Member (MemberID, DatabaseCode) VALUES (?, ?)",
                               [(n, f"M{n}") for n in range(3, 40)])
        connection.execute("CREATE INDEX ix_code ON STP_Member (DatabaseCode)")
    with db.connect("ciocdemo", settings) as database:
        batches = list(database.iterate_table("[MemberID]", "[STP_Member]",
                                              "DatabaseCode LIKE 'M%'", size=4, page=5))
        everything = list(database.iterate_table("[MemberID]", "[STP_Member]", size=100, page=7))
    assert all(len(batch) <= 4 for batch in batches)
    assert [row[0] for batch in batches for row in batch] == list(range(3, 40))
    assert sum(len(batch) for batch in everything) == 39


class SqlServerAnswers(db.Database):
    """A Database whose catalog questions are answered as SQL Server answers them for a
    login: ``visible`` procedures (OBJECT_ID not NULL), ``granted`` ones (EXECUTE), and the
    ``columns`` ({table: {column}}) its SELECT rights let it see."""

    def __init__(self, visible, granted, columns):
        super().__init__(connection=None, name="cioc", backend="mssql")
        self.visible, self.granted, self.columns = visible, granted, columns

    def query_rows(self, sql, *params):
        name = params[0].removeprefix("dbo.")
        if "HAS_PERMS_BY_NAME" in sql:
            return [(1 if name in self.visible else None, 1 if name in self.granted else 0)]
        if "COL_LENGTH" in sql:
            return [(4 if params[1] in self.columns.get(name, ()) else None,)]
        return [(1 if name in self.columns else None,)]


CURRENT = {"GBL_Agency": {"AgencyCode", "UpdateEmailVOL"}, "STP_Member": {"UseVolunteerProfiles"}}
OLDER = {**CURRENT, "GBL_Agency": {"AgencyCode", "GetInvolvedUser"},
         "VOL_GetInvolved_Interest": {"GIInterestID"}}


@pytest.mark.parametrize("visible, granted, columns, state", [
    ({"sp_VOL_GetInvolved_Sync"}, {"sp_VOL_GetInvolved_Sync"}, OLDER, "ok"),
    ({"sp_VOL_GetInvolved_Sync"}, set(), OLDER, "denied"),
    # No EXECUTE and no VIEW DEFINITION: SQL Server hides the procedure, but its tables
    # are there, so this CIOC version has it and the login lacks the grant.
    (set(), set(), OLDER, "denied"),
    # A current CIOC: neither the procedure nor the columns it read.
    (set(), set(), CURRENT, "missing"),
])
def test_sql_server_tells_a_missing_procedure_from_one_the_login_may_not_run(
        visible, granted, columns, state):
    answers = SqlServerAnswers(visible, granted, columns)
    assert answers.procedure_state("sp_VOL_GetInvolved_Sync") == state
