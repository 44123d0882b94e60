"""Each CIOC procedure on the sample backend, through the real ODBC path, against what the
real T-SQL (OpenCIOC/onlineresources, python/sql/core/Stored Procedures) returns: CIOC's
columns in CIOC's order, the rows its WHERE clauses select, and per-culture columns as the
XML text SQL Server's FOR XML PATH('DESC'), ROOT('DESCS'), TYPE produces."""

import datetime
import sqlite3

import pytest

from cioctasks import procs
from cioctasks.sampledb import procsql, schema
from conftest import connect

SCHEDULE = list(procs.SCHEDULE_FLAGS)


@pytest.fixture
def database(world):
    with connect(world) as opened:
        yield opened


def columns(rows):
    return list(rows[0].keys())


def minute(moment):
    return moment.replace(second=0, microsecond=0)


# -- FOR XML text and its one decoder ---------------------------------------------------

def xml_of(attributes):
    """Run procsql.xml_descs over one row of values in SQLite; return the XML text."""
    connection = sqlite3.connect(":memory:")
    names = [name for name, _ in attributes]
    connection.execute(f"CREATE TABLE t ({', '.join(names)})")
    connection.execute(f"INSERT INTO t VALUES ({', '.join('?' for _ in names)})",
                       [value for _, value in attributes])
    sql = procsql.xml_descs([(name, f"t.{name}") for name in names], "t")
    return connection.execute(f"SELECT {sql}").fetchone()[0]


def test_xml_is_escaped_as_sql_server_escapes_attributes_and_null_attributes_are_left_out():
    text = xml_of([("POSITION_TITLE", 'Drivers & <Helpers> "Meals" l\'été\r\n\tdone'),
                   ("ORG_LEVEL_2", None), ("Culture", "fr-CA"), ("NEWLY_CREATED", 1)])
    assert text == ('<DESCS><DESC POSITION_TITLE="Drivers &amp; &lt;Helpers&gt; &quot;Meals&quot;'
                    ' l\'été&#xD;&#xA;&#x9;done" Culture="fr-CA" NEWLY_CREATED="1"/></DESCS>')
    assert procs.decode_xml(text) == [{"POSITION_TITLE": 'Drivers & <Helpers> "Meals" l\'été\r\n\tdone',
                                       "Culture": "fr-CA", "NEWLY_CREATED": "1"}]


def test_the_decoder_reads_xml_as_the_real_procedures_return_it():
    # sp_VOL_Profile_Notify's three XML columns, as SQL Server returns them to pyodbc.
    op_name = ('<DESCS><DESC POSITION_TITLE="Front desk" Culture="en-CA" NEWLY_CREATED="1" '
               'CHANGED="0"/><DESC POSITION_TITLE="Accueil" Culture="fr-CA" NEWLY_CREATED="1" '
               'CHANGED="0"/></DESCS>')
    view_info = ('<DESCS><DESC AccessURL="benevoles.example.ca" Culture="en-CA"/>'
                 '<DESC ViewType="7" AccessURL="benevoles.example.ca/fr" Culture="fr-CA"/></DESCS>')
    names = '<NAMES><NAME Name="Orléans, Ontario"/><NAME Name="A &amp; B, Ontario"/></NAMES>'
    assert procs.decode_xml(op_name)[1] == {"POSITION_TITLE": "Accueil", "Culture": "fr-CA",
                                            "NEWLY_CREATED": "1", "CHANGED": "0"}
    assert [v.get("ViewType") for v in procs.decode_xml(view_info)] == [None, "7"]
    assert procs.decode_xml(names) == [{"Name": "Orléans, Ontario"}, {"Name": "A & B, Ontario"}]
    with pytest.raises(ValueError):
        procs.decode_xml("<DESCS><DESC unterminated")


@pytest.mark.parametrize("read", ["whole", "in batches"])
def test_text_that_is_not_xml_fails_that_database_in_one_line(database, monkeypatch, read):
    from cioctasks import db

    broken = procs.get("sp_VOL_Profile_Notify")._replace(
        sample=("SELECT 'V1' AS VNUM, '<DESCS><DESC POSITION_TITLE=\"x' AS OP_NAME",))
    monkeypatch.setitem(procs._table(), "sp_VOL_Profile_Notify", broken)
    with pytest.raises(db.DatabaseError) as raised:
        if read == "whole":
            database.call("sp_VOL_Profile_Notify", 1)
        else:
            list(database.call_batches("sp_VOL_Profile_Notify", 1))
    assert str(raised.value).startswith("ciocdemo: sp_VOL_Profile_Notify returned OP_NAME that is not XML")
    assert "\n" not in str(raised.value)


def test_both_backends_decode_through_the_same_code(database):
    proc = procs.get("sp_VOL_Profile_Notify")
    raw = [[{"OP_NAME": '<DESCS><DESC POSITION_TITLE="x" Culture="en-CA"/></DESCS>',
             "ORG_NAME": None, "ViewInfo": b'<DESCS><DESC AccessURL="h" Culture="en-CA"/></DESCS>'}]]
    (rows,) = procs.normalize(proc, raw)
    assert rows[0] == {"OP_NAME": [{"POSITION_TITLE": "x", "Culture": "en-CA"}], "ORG_NAME": [],
                       "ViewInfo": [{"AccessURL": "h", "Culture": "en-CA"}]}


# -- sp_VOL_NUMChanged_l --------------------------------------------------------------

def test_records_changed_since_yesterday_are_listed_with_their_agency(database):
    yesterday = datetime.datetime.now() - datetime.timedelta(days=1)
    (rows,) = database.call("sp_VOL_NUMChanged_l", yesterday)
    assert rows
    assert columns(rows) == ["UpdateEmailVOL", "DefaultEmailVOL", "DefaultEmailNameVOL", "NUM",
                             "LangID", "ORG_NAME_FULL", "NON_PUBLIC", "DELETION_DATE",
                             "RECORD_OWNER", "OpportunityCount"]
    assert all(r["NON_PUBLIC"] or r["DELETION_DATE"] for r in rows)
    assert all(r["OpportunityCount"] >= 1 and r["UpdateEmailVOL"] for r in rows)
    keys = [(r["RECORD_OWNER"], r["ORG_NAME_FULL"], r["NUM"], r["LangID"]) for r in rows]
    assert keys == sorted(keys)
    later = datetime.datetime.now() + datetime.timedelta(minutes=2)
    assert database.call("sp_VOL_NUMChanged_l", later) == [[]]


def test_the_modified_date_is_a_smalldatetime_rounded_to_the_minute(database):
    """@MODIFIED_DATE smalldatetime: 10:15:20 becomes 10:15, 10:15:40 becomes 10:16, while
    the history's MODIFIED_DATE is a datetime to the millisecond."""
    (rows,) = database.call("sp_VOL_NUMChanged_l", datetime.datetime.now() - datetime.timedelta(days=1))
    num, lang_id = rows[0]["NUM"], rows[0]["LangID"]
    database.execute("DELETE FROM GBL_BaseTable_History WHERE NUM = ?", num)
    changed = minute(datetime.datetime.now()) - datetime.timedelta(hours=1, seconds=-50)  # hh:mm:50
    database.execute("INSERT INTO GBL_BaseTable_History (NUM, LangID, FieldID, MODIFIED_DATE) "
                     "VALUES (?, ?, 1, ?)", num, lang_id, schema.stamp(changed))
    listed = {r["NUM"] for r in database.call("sp_VOL_NUMChanged_l", changed - datetime.timedelta(seconds=25))[0]}
    assert num in listed  # hh:mm:25 rounds down to hh:mm:00, before the change
    listed = {r["NUM"] for r in database.call("sp_VOL_NUMChanged_l", changed - datetime.timedelta(seconds=20))[0]}
    assert num not in listed  # hh:mm:30 rounds up to hh:mm+1:00, after the change


def test_the_organization_name_is_cioc_full_name_with_the_location(database):
    (rows,) = database.call("sp_VOL_NUMChanged_l", datetime.datetime.now() - datetime.timedelta(days=1))
    row = rows[0]
    (description,) = database.query(
        "SELECT ORG_LEVEL_1, ORG_LEVEL_2, LOCATION_NAME FROM GBL_BaseTable_Description "
        "WHERE NUM = ? AND LangID = ?", row["NUM"], row["LangID"])
    expected = ", ".join(v for v in (description["ORG_LEVEL_1"], description["ORG_LEVEL_2"],
                                     description["LOCATION_NAME"]) if v)
    assert row["ORG_NAME_FULL"] == expected


# -- sp_VOL_Profile_Notify and friends ------------------------------------------------

def test_notify_enabled_lists_every_member_with_its_setting(database):
    database.execute("UPDATE STP_Member SET UseVolunteerProfiles = 0 WHERE MemberID = 2")
    (enabled,) = database.call("sp_VOL_Profile_Notify_Enabled")
    assert sorted((r["MemberID"], r["UseVolunteerProfiles"]) for r in enabled) == [(1, True), (2, False)]


def test_profile_notify_returns_cioc_result_sets(database):
    opportunities, profiles, settings = database.call("sp_VOL_Profile_Notify", 1)
    assert opportunities and profiles
    assert columns(opportunities) == (["VNUM", "MemberID", "AccessURL"] + SCHEDULE + [
        "MIN_AGE", "MAX_AGE", "COMMUNITIES", "INTERESTS", "OP_NAME", "ORG_NAME", "ViewInfo"])
    # The profile set has NotifyUpdated and no NotifyNew; AGE is decimal(5,2).
    assert columns(profiles) == (["MemberID", "ProfileID", "FirstName", "LastName", "Email",
                                  "NotifyUpdated"] + SCHEDULE +
                                 ["AGE", "COMMUNITIES", "INTERESTS", "Culture", "UnsubscribeToken"])
    assert all(round(p["AGE"], 2) == p["AGE"] for p in profiles if p["AGE"] is not None)
    assert settings == [{"BaseURL": "ciocdemo.cioc.ca",
                         "DefaultEmailVOL": "benevolat@ciocdemo1.example.org",
                         "DefaultEmailNameVOL": "Centre d'action bénévole Ciocdemo 1",
                         "DefaultEmailVOLProfile": "profils@ciocdemo1.example.org"}]
    assert all(o["AccessURL"] is None for o in opportunities)
    first = opportunities[0]
    assert set(first["OP_NAME"][0]) == {"POSITION_TITLE", "Culture", "NEWLY_CREATED", "CHANGED"}
    assert {"Culture", "ORG_LEVEL_1"} <= set(first["ORG_NAME"][0])
    new = [max(c["NEWLY_CREATED"] for c in o["OP_NAME"]) for o in opportunities]
    assert set(new) <= {"0", "1"} and new == sorted(new, reverse=True)
    assert {p["Culture"] for p in profiles} == {"en-CA", "fr-CA"}


def test_a_position_created_and_changed_in_the_window_has_both_flags(database):
    today = datetime.datetime.combine(datetime.date.today(), datetime.time())
    two_days = schema.stamp(today - datetime.timedelta(days=2))
    database.execute("UPDATE VOL_Opportunity_Description SET CREATED_DATE = ?, UPDATE_DATE = ? "
                     "WHERE VNUM = 'V000003'", two_days, two_days)
    database.execute("UPDATE VOL_Opportunity SET DISPLAY_UNTIL = NULL WHERE VNUM = 'V000003'")
    database.execute("UPDATE VOL_Opportunity SET MemberID = 1 WHERE VNUM = 'V000003'")
    database.execute("INSERT INTO VOL_OP_CommunitySet (VNUM, CommunitySetID) VALUES ('V000003', 1)")
    opportunities, _, _ = database.call("sp_VOL_Profile_Notify", 1)
    (position,) = [o for o in opportunities if o["VNUM"] == "V000003"]
    english = next(d for d in position["OP_NAME"] if d["Culture"] == "en-CA")
    assert english == {"POSITION_TITLE": 'Drivers & <Helpers> "Meals"', "Culture": "en-CA",
                       "NEWLY_CREATED": "1", "CHANGED": "1"}


def test_view_info_puts_the_default_view_first_without_its_view_type(database):
    opportunities, _, _ = database.call("sp_VOL_Profile_Notify", 1)
    for opportunity in opportunities:
        views = opportunity["ViewInfo"]
        assert views and views[0]["AccessURL"] == "ciocdemo.cioc.ca"
        assert "ViewType" not in views[0]
        # View 12 is reached through its own domain name: no ViewType either.
        assert {v["AccessURL"] for v in views} <= {"ciocdemo.cioc.ca", "www.Ciocdemo1Example.ORG"}
        assert all("ViewType" not in v for v in views)


def test_a_position_no_profile_view_shows_is_dropped(database):
    opportunities, _, _ = database.call("sp_VOL_Profile_Notify", 1)
    vnum = opportunities[0]["VNUM"]
    database.execute("DELETE FROM VOL_OP_CommunitySet WHERE VNUM = ?", vnum)
    after, _, _ = database.call("sp_VOL_Profile_Notify", 1)
    assert vnum not in {o["VNUM"] for o in after}


def test_opportunity_communities_include_their_parents_and_children(database):
    opportunities, _, _ = database.call("sp_VOL_Profile_Notify", 1)
    for opportunity in opportunities:
        own = {r["CM_ID"] for r in database.query("SELECT CM_ID FROM VOL_OP_CM WHERE VNUM = ?",
                                                   opportunity["VNUM"])}
        listed = {int(c) for c in opportunity["COMMUNITIES"].split(",")}
        assert own <= listed
        for cm_id in own:
            parents = database.query("SELECT Parent_CM_ID AS p FROM GBL_Community_ParentList "
                                     "WHERE CM_ID = ?", cm_id)
            assert {r["p"] for r in parents} <= listed


def test_profile_notify_done_moves_the_window_to_today_and_no_profiles_without_positions(database):
    database.call("sp_VOL_Profile_Notify_Done", 1)
    (row,) = database.query("SELECT LastVolProfileEmailDate AS d FROM STP_Member WHERE MemberID = 1")
    today = datetime.datetime.combine(datetime.date.today(), datetime.time())
    assert row["d"] == today
    opportunities, profiles, _ = database.call("sp_VOL_Profile_Notify", 1)
    assert opportunities == [] and profiles == []


# -- sp_STP_Nightly_Tasks and sp_STP_OfflineTools_Domains -----------------------------

def test_nightly_tasks_move_accumulated_stats_count_usage_and_end_revoked_shares(database):
    def count(table):
        return database.query(f"SELECT COUNT(*) AS n FROM {table}")[0]["n"]

    accumulated, stored = count("CIC_Stats_RSN_Accumulator"), count("CIC_Stats_RSN")
    vol_accumulated, vol_stored = count("VOL_Stats_OPID_Accumulator"), count("VOL_Stats_OPID")
    shares = count("GBL_BT_SharingProfile")
    assert accumulated > 0 and vol_accumulated > 0
    assert database.call("sp_STP_Nightly_Tasks") == []
    assert count("CIC_Stats_RSN_Accumulator") == 0 and count("VOL_Stats_OPID_Accumulator") == 0
    assert count("CIC_Stats_RSN") == stored + accumulated
    assert count("VOL_Stats_OPID") == vol_stored + vol_accumulated
    (usage,) = database.query(
        "SELECT CMP_USAGE_COUNT AS n, CMP_USAGE_COUNT_P + CMP_USAGE_COUNT_S AS parts, NUM, MemberID "
        "FROM GBL_BaseTable_StatsCache ORDER BY CMP_USAGE_COUNT DESC LIMIT 1")
    counted = database.query("SELECT COUNT(*) AS n FROM CIC_Stats_RSN st JOIN GBL_BaseTable bt "
                             "ON st.RSN = bt.RSN WHERE bt.NUM = ? AND st.MemberID = ?",
                             usage["NUM"], usage["MemberID"])[0]["n"]
    assert usage["n"] == counted == usage["parts"]
    assert count("GBL_BT_SharingProfile") < shares
    assert database.query("SELECT Active FROM GBL_SharingProfile WHERE ProfileID = 2") == [{"Active": False}]
    assert database.query("SELECT Active FROM GBL_SharingProfile WHERE ProfileID = 3") == [{"Active": True}]


def test_offline_tools_domains_put_names_under_cioc_ca_first(database):
    (rows,) = database.call("sp_STP_OfflineTools_Domains")
    assert columns(rows) == ["MemberID", "SecondaryName", "DomainName"]
    first = rows[0]
    assert first["DomainName"].endswith(".cioc.ca") and first["DomainName"].count(".") == 2
    keys = [(r["MemberID"], r["SecondaryName"]) for r in rows]
    assert keys == sorted(keys)


def test_a_current_database_has_no_getinvolved_procedures(database):
    assert database.procedure_state("sp_VOL_GetInvolved_Sync") == "missing"
    assert database.procedure_state("sp_VOL_GetInvolved_Enabled") == "missing"
    assert database.procedure_state("sp_VOL_Profile_Notify") == "ok"


def test_a_procedure_read_in_batches_gives_what_call_gives_one_batch_at_a_time(database):
    whole = database.call("sp_VOL_Profile_Notify", 1)
    assert len(whole[0]) > 7 and len(whole[1]) > 7  # positions and profiles: several batches
    sets = {}
    for index, rows in database.call_batches("sp_VOL_Profile_Notify", 1, size=7):
        assert 0 < len(rows) <= 7
        sets.setdefault(index, []).extend(rows)
    # The SQLite ODBC driver types a computed column by its values when it reads a result
    # whole, and as text when it steps through it: AGE (SQL Server's decimal(5,2)) comes as
    # a float or as its text. matching.number takes either, and a Decimal.
    for row in sets[1]:
        row["AGE"] = None if row["AGE"] is None else float(row["AGE"])
    assert [sets[index] for index in range(3)] == whole  # XML decoded, in the same order
    # Back in a transaction, and the connection usable at once.
    assert database.connection.autocommit is False
    assert database.call("sp_VOL_Profile_Notify", 1) == whole


def test_a_procedure_read_in_batches_and_left_half_way_leaves_the_connection_usable(database):
    batches = database.call_batches("sp_VOL_Profile_Notify", 1, size=5)
    next(batches)
    batches.close()
    assert database.connection.autocommit is False
    assert database.query("SELECT COUNT(*) AS n FROM STP_Member")[0]["n"] > 0
