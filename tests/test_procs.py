"""Each CIOC procedure on the sample backend, through the real ODBC path: CIOC's columns,
in CIOC's order, with the rows the sample world promises."""

import datetime

import pytest

from cioctasks import procs
from conftest import connect

SCHEDULE = list(procs.SCHEDULE_FLAGS)


@pytest.fixture
def database(world):
    with connect(world) as opened:
        yield opened


def columns(rows):
    return list(rows[0].keys())


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
    (later,) = database.call("sp_VOL_NUMChanged_l", datetime.datetime.now())
    assert later == []


def test_a_record_whose_positions_are_all_hidden_is_not_listed(database):
    yesterday = datetime.datetime.now() - datetime.timedelta(days=1)
    (rows,) = database.call("sp_VOL_NUMChanged_l", yesterday)
    num = rows[0]["NUM"]
    database.execute("UPDATE VOL_Opportunity_Description SET NON_PUBLIC = 1 WHERE VNUM IN "
                     "(SELECT VNUM FROM VOL_Opportunity WHERE NUM = ?)", num)
    (after,) = database.call("sp_VOL_NUMChanged_l", yesterday)
    assert num not in {r["NUM"] for r in after}


def test_profile_notify_returns_opportunities_profiles_and_settings(database):
    (enabled,) = database.call("sp_VOL_Profile_Notify_Enabled")
    assert columns(enabled) == ["MemberID", "UseVolunteerProfiles"]
    opportunities, profiles, settings = database.call("sp_VOL_Profile_Notify", 1)
    assert opportunities and profiles
    assert columns(opportunities) == (["VNUM", "MemberID", "AccessURL"] + SCHEDULE + [
        "MIN_AGE", "MAX_AGE", "COMMUNITIES", "INTERESTS", "OP_NAME", "ORG_NAME", "ViewInfo"])
    assert columns(profiles)[:6] == ["MemberID", "ProfileID", "FirstName", "LastName", "Email",
                                     "NotifyUpdated"]
    assert columns(profiles)[6:27] == SCHEDULE
    assert columns(profiles)[27:] == ["AGE", "COMMUNITIES", "INTERESTS", "Culture",
                                      "UnsubscribeToken", "NotifyNew"]
    assert settings == [{"BaseURL": "https://ciocdemo.cioc.ca",
                         "DefaultEmailVOL": "benevolat@ciocdemo1.example.org",
                         "DefaultEmailNameVOL": "Centre d'action bénévole Ciocdemo 1",
                         "DefaultEmailVOLProfile": "profils@ciocdemo1.example.org"}]
    first = opportunities[0]
    assert {"Culture", "LangID", "POSITION_TITLE", "NEW", "CHANGED"} <= set(first["OP_NAME"][0])
    assert {"Culture", "ORG_LEVEL_1"} <= set(first["ORG_NAME"][0])
    assert {"Culture", "ViewType", "AccessURL"} <= set(first["ViewInfo"][0])
    new_flags = [max(c["NEW"] for c in o["OP_NAME"]) for o in opportunities]
    assert new_flags == sorted(new_flags, reverse=True)
    assert {p["Culture"] for p in profiles} == {"en-CA", "fr-CA"}


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


def test_profile_notify_done_moves_the_window_to_today(database):
    database.call("sp_VOL_Profile_Notify_Done", 1)
    (row,) = database.query("SELECT LastVolProfileEmailDate AS d FROM STP_Member WHERE MemberID = 1")
    today = datetime.datetime.combine(datetime.date.today(), datetime.time())
    assert row["d"] == today
    opportunities, _, _ = database.call("sp_VOL_Profile_Notify", 1)
    assert opportunities == []


def test_nightly_tasks_move_accumulated_stats_and_end_revoked_shares(database):
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
    assert count("CIC_Stats_RSN_Cache") > 0
    assert count("GBL_BT_SharingProfile") < shares
    assert database.query("SELECT Active FROM GBL_SharingProfile WHERE ProfileID = 2") == [{"Active": False}]
    assert database.query("SELECT Active FROM GBL_SharingProfile WHERE ProfileID = 3") == [{"Active": True}]


def test_offline_tools_domains_put_names_under_cioc_ca_first(database):
    (rows,) = database.call("sp_STP_OfflineTools_Domains")
    assert columns(rows) == ["MemberID", "SecondaryName", "DomainName"]
    first = rows[0]
    assert first["DomainName"].endswith(".cioc.ca") and first["DomainName"].count(".") == 2


def test_getinvolved_sync_keeps_future_deletions_and_drops_past_ones(database):
    (agencies,) = database.call("sp_VOL_GetInvolved_Enabled")
    assert columns(agencies) == ["MemberID", "GetInvolvedUser", "GetInvolvedToken", "GetInvolvedSite"]
    agency = agencies[0]
    args = (agency["MemberID"], agency["GetInvolvedUser"], agency["GetInvolvedToken"],
            agency["GetInvolvedSite"])
    (rows,) = database.call("sp_VOL_GetInvolved_Sync", *args)
    assert columns(rows) == ["VNUM", "COMMUNITIES", "INTERESTS", "SKILLS", "OP_NAME",
                             "ORG_NAME_FULL", "DISPLAY_UNTIL", "DELETION_DATE", "DUTIES",
                             "ViewInfo", "Culture"]
    future, past = rows[0]["VNUM"], rows[-1]["VNUM"]
    assert future != past
    database.execute("UPDATE VOL_Opportunity_Description SET DELETION_DATE = ? WHERE VNUM = ?",
                     datetime.datetime.now() + datetime.timedelta(days=3), future)
    database.execute("UPDATE VOL_Opportunity_Description SET DELETION_DATE = ? WHERE VNUM = ?",
                     datetime.datetime.now() - datetime.timedelta(days=3), past)
    (after,) = database.call("sp_VOL_GetInvolved_Sync", *args)
    vnums = {r["VNUM"] for r in after}
    assert future in vnums and past not in vnums
    assert all(r["COMMUNITIES"].count(";") <= 3 for r in after)
    wrong_token = (*args[:2], "not-the-token", args[3])
    assert database.call("sp_VOL_GetInvolved_Sync", *wrong_token) == [[]]
