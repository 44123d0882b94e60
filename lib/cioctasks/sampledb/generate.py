"""The rows of one sample CIOC database: deterministic for a seed and a build day, English
and French, with dates placed relative to the build day so that every task finds work on
its first run.

The tables the tasks read get realistic rows; then every table still empty gets a row per
member (or one shared row), following its foreign keys to rows of the same member, so the
download rules meet every real table. Text in those rows names the member that owns them
(``member 2``), which lets the tests prove no other member's row reaches a download.
"""

import datetime
import sqlite3
import uuid

from cioctasks.procs import SCHEDULE_FLAGS
from cioctasks.sampledb import schema, texts

SCALES = {
    "small": dict(communities=40, interests=30, skills=20, organizations=150, opportunities=80,
                  profiles=200, cic_stats=3_000, vol_stats=600),
    "medium": dict(communities=120, interests=60, skills=40, organizations=5_000,
                   opportunities=1_000, profiles=10_000, cic_stats=100_000, vol_stats=20_000),
    "large": dict(communities=300, interests=80, skills=60, organizations=40_000,
                  opportunities=5_000, profiles=100_000, cic_stats=1_250_000, vol_stats=200_000),
}
MEMBERS = 2
REGIONS = 5
FIELDS = {1: "NON_PUBLIC", 2: "DELETION_DATE", 3: "ORG_LEVEL_1", 4: "LOCATION_NAME", 5: "UPDATE_DATE"}
LANGUAGES = [dict(LangID=0, LanguageName="English", LanguageAlias="English", Culture="en-CA",
                  LCID=4105, Active=1, ActiveRecord=1),
             dict(LangID=2, LanguageName="Français", LanguageAlias="French", Culture="fr-CA",
                  LCID=3084, Active=1, ActiveRecord=1)]
#: Columns that say which member a row belongs to.
MEMBER_COLUMNS = ("MemberID", "MemberID_Cache")

stamp = schema.stamp


class Generator:
    def __init__(self, connection, site, scale, rng, now, extra_tables=None):
        self.db = connection
        self.site = site
        self.counts = SCALES[scale]
        self.rng = rng
        self.now = now
        self.today = datetime.datetime.combine(now.date(), datetime.time())
        self.inserter = schema.Inserter(connection, extra_tables)
        self.tables = self.inserter.tables

    def guid(self):
        return "{" + str(uuid.UUID(int=self.rng.getrandbits(128), version=4)).upper() + "}"

    def ago(self, days_low, days_high):
        seconds = self.rng.uniform(days_low * 86400, days_high * 86400)
        return self.now - datetime.timedelta(seconds=seconds)

    def insert(self, table, rows):
        """Insert dict rows, filling the required columns not given."""
        return self.inserter.insert(table, rows)

    def bulk(self, table, columns, rows):
        """Insert tuples into ``columns`` with one prepared statement (the big tables)."""
        # Defaults that differ from build to build (GETDATE(), NEWID()) get fixed values,
        # so a seed always gives the same rows.
        varying = [c for c in self.inserter.required(table)
                   if c["name"] not in columns and schema.varying_default(c)]
        if varying:
            values = tuple(schema.filler(c, 1) if c["type"] != "smalldatetime"
                           and c["type"] != "datetime" else stamp(self.now) for c in varying)
            columns = (*columns, *(c["name"] for c in varying))
            rows = (tuple(row) + values for row in rows)
        names = ", ".join(schema.quote(c) for c in columns)
        marks = ", ".join("?" for _ in columns)
        minutes = schema.minute_columns(self.tables[table], columns)
        if minutes:
            rows = (tuple(schema.to_smalldatetime(v) if i in minutes else v
                          for i, v in enumerate(row)) for row in rows)
        self.db.executemany(f"INSERT INTO {schema.quote(table)} ({names}) VALUES ({marks})", rows)

    def run(self):
        self.db.execute("BEGIN")
        self.insert("STP_Language", LANGUAGES)
        self.insert("GBL_FieldOption", [dict(FieldID=i, FieldName=n, DisplayOrder=0)
                                        for i, n in FIELDS.items()])
        self.members()
        self.communities()
        self.interests_and_skills()
        self.agencies()
        self.organizations()
        self.opportunities()
        self.profiles()
        self.stats()
        self.sharing()
        self.fill_every_table()
        self.db.execute("COMMIT")

    def base_url(self, member_id):
        return f"{self.site}.cioc.ca" if member_id == 1 else f"{self.site}-m{member_id}.cioc.ca"

    def members(self):
        site, title = self.site, self.site.capitalize()
        members, names, views, view_names, recurse, domains = [], [], [], [], [], []
        for member_id in range(1, MEMBERS + 1):
            last_mail = stamp(self.today - datetime.timedelta(days=4)) if member_id == 1 else None
            members.append(dict(
                MemberID=member_id, DatabaseCode=f"{site.upper()}{member_id}"[:15],
                DefaultTemplate=1, UseCIC=1, UseVOL=1, UseVolunteerProfiles=1,
                LastVolProfileEmailDate=last_mail,
                BaseURLCIC="cic-" + self.base_url(member_id),
                BaseURLVOL=self.base_url(member_id),
                DefaultViewCIC=member_id * 10, DefaultViewVOL=member_id * 10 + 1,
                DefaultEmailVOL=f"benevolat@{site}{member_id}.example.org",
                DefaultEmailNameVOL=f"Centre d'action bénévole {title} {member_id}",
                DefaultEmailVOLProfile=(f"profils@{site}{member_id}.example.org"
                                        if member_id == 1 else None),
                UseOfflineTools=1,
                DownloadPasswordCIC=f"Cic#{site[:10]}{member_id}",
                DownloadPasswordVOL=f"Vol#{site[:10]}{member_id}",
                DownloadUncompressed=1 if member_id == 2 else 0,
                BillingInfoPassword=f"billing secret of member {member_id}",
            ))
            names += [dict(MemberID=member_id, LangID=0,
                           MemberName=f"{title} Community Services {member_id}"),
                      dict(MemberID=member_id, LangID=2,
                           MemberName=f"Services communautaires {title} {member_id}")]
            # The default volunteer view, and a second one it can see (a profile view too).
            default, other = member_id * 10 + 1, member_id * 10 + 2
            for view in (default, other):
                views.append(dict(ViewType=view, MemberID=member_id, CommunitySetID=member_id,
                                  Template=1, UseProfilesView=1))
                view_names += [dict(ViewType=view, LangID=0, ViewName=f"Volunteer {view}"),
                               dict(ViewType=view, LangID=2, ViewName=f"Bénévolat {view}")]
            recurse.append(dict(ViewType=default, CanSee=other))
            host = self.base_url(member_id)
            domains += [dict(MemberID=member_id, DomainName=host, SecondaryName=0),
                        dict(MemberID=member_id, DomainName=f"www.{title}{member_id}Example.ORG",
                             SecondaryName=0, VOLViewType=other)]
            if member_id == 1:
                domains.append(dict(MemberID=member_id, SecondaryName=1,
                                    DomainName=host.replace(".cioc.ca", "-fr.cioc.ca")))
            domains.append(dict(MemberID=member_id, SecondaryName=1,
                                DomainName=f"benevoles.{site}{member_id}.example.qc.ca"))
        # A group with no name under cioc.ca: the offline map must report it, not guess.
        domains.append(dict(MemberID=2, DomainName=f"only.{site}.example.net", SecondaryName=1))
        self.insert("STP_Member", members)
        self.insert("STP_Member_Description", names)
        self.insert("VOL_CommunitySet", [dict(CommunitySetID=m, MemberID=m)
                                         for m in range(1, MEMBERS + 1)])
        self.insert("VOL_View", views)
        self.insert("VOL_View_Recurse", recurse)
        self.insert("VOL_View_Description", view_names)
        self.insert("CIC_View", [dict(ViewType=m * 10, MemberID=m, Template=1)
                                 for m in range(1, MEMBERS + 1)])
        self.insert("GBL_View_DomainMap", [
            dict(DMAP_ID=number, DefaultLangID=0, CICViewType=d["MemberID"] * 10, **d)
            for number, d in enumerate(domains, 1)])

    def communities(self):
        count = self.counts["communities"]
        rows, names, parents = [], [], []
        for cm_id in range(1, count + 1):
            parent = None if cm_id <= REGIONS else (cm_id % REGIONS) + 1
            rows.append(dict(CM_ID=cm_id, ParentCommunity=parent, CM_GUID=self.guid()))
            en, fr = texts.community(cm_id)
            names += [dict(CM_ID=cm_id, LangID=0, Name=en), dict(CM_ID=cm_id, LangID=2, Name=fr)]
            if parent:
                parents.append(dict(CM_ID=cm_id, Parent_CM_ID=parent))
        self.insert("GBL_Community", rows)
        self.insert("GBL_Community_Name", names)
        self.insert("GBL_Community_ParentList", parents)
        set_names, groups, members = [], [], []
        for member_id in range(1, MEMBERS + 1):
            set_names += [dict(CommunitySetID=member_id, LangID=0, SetName=f"Area {member_id}",
                               AreaServed=f"Region {member_id}"),
                          dict(CommunitySetID=member_id, LangID=2, SetName=f"Zone {member_id}",
                               AreaServed=f"Région {member_id}")]
            groups.append(dict(CommunityGroupID=member_id, CommunitySetID=member_id))
            members += [dict(CommunityGroupID=member_id, CM_ID=cm_id)
                        for cm_id in range(1, count + 1)
                        if cm_id % 2 == member_id % 2 or cm_id <= REGIONS]
        self.insert("VOL_CommunitySet_Name", set_names)
        self.insert("VOL_CommunityGroup", groups)
        self.insert("VOL_CommunityGroup_CM", members)

    def interests_and_skills(self):
        for kind, table, key, count in (
                ("interest", "VOL_Interest", "AI_ID", self.counts["interests"]),
                ("skill", "VOL_Skill", "SK_ID", self.counts["skills"])):
            self.insert(table, [{key: n, "Code": f"{kind[:2].upper()}{n}"}
                                for n in range(1, count + 1)])
            names = []
            for n in range(1, count + 1):
                en, fr = texts.label(kind, n)
                names += [{key: n, "LangID": 0, "Name": en}, {key: n, "LangID": 2, "Name": fr}]
            self.insert(f"{table}_Name", names)

    def agencies(self):
        self.agency_codes = {m: [] for m in range(1, MEMBERS + 1)}
        rows = []
        for number in range(1, 4 * MEMBERS + 1):
            member_id = 1 + (number - 1) % MEMBERS
            code = texts.agency_code(number)
            self.agency_codes[member_id].append(code)
            email = None if number % 4 == 0 else f"{code.lower()}.records@{self.site}.example.org"
            rows.append(dict(AgencyID=number, AgencyCode=code, MemberID=member_id,
                             RecordOwnerCIC=1, RecordOwnerVOL=1, UpdateEmailVOL=email))
        self.insert("GBL_Agency", rows)

    def organizations(self):
        rng, count = self.rng, self.counts["organizations"]
        prefix = self.site[:3].upper()
        self.organizations_by_member = {m: [] for m in range(1, MEMBERS + 1)}
        base, descriptions = [], []
        for number in range(1, count + 1):
            num = f"{prefix}{number:05}"
            member_id = 1 if rng.random() < 0.7 else 2
            owner = rng.choice(self.agency_codes[member_id])
            created = self.ago(200, 2000)
            base.append((number, num, member_id, owner, stamp(created), stamp(self.ago(1, 200)),
                         f"{number:06X}"[:6], f"upd-pw-{member_id}-{number}"))
            self.organizations_by_member[member_id].append((num, owner))
            names = texts.organization(rng, number)
            for lang_id in (0, 2) if rng.random() < 0.6 else (0,):
                descriptions.append((num, lang_id, *names[lang_id], texts.place(rng, lang_id), 0,
                                     stamp(created), stamp(self.ago(1, 200))))
        self.bulk("GBL_BaseTable", ("RSN", "NUM", "MemberID", "RECORD_OWNER", "CREATED_DATE",
                                    "MODIFIED_DATE", "FBKEY", "UPDATE_PASSWORD"), base)
        self.bulk("GBL_BaseTable_Description",
                  ("NUM", "LangID", "ORG_LEVEL_1", "ORG_LEVEL_2", "ORG_LEVEL_3", "ORG_LEVEL_4",
                   "ORG_LEVEL_5", "LOCATION_NAME", "NON_PUBLIC", "CREATED_DATE", "UPDATE_DATE"),
                  descriptions)

    def opportunities(self):
        rng, count = self.rng, self.counts["opportunities"]
        communities, interests = self.counts["communities"], self.counts["interests"]
        rows, descriptions, op_cm, op_ai, op_sk, op_sets = [], [], [], [], [], []
        self.opportunity_orgs = set()
        for number in range(1, count + 1):
            vnum = f"V{number:06}"
            member_id = 1 if rng.random() < 0.75 else 2
            num, owner = rng.choice(self.organizations_by_member[member_id])
            self.opportunity_orgs.add((num, member_id))
            roll = rng.random()
            if roll < 0.3:
                created = updated = self.ago(0.5, 10)      # new since the last notification
            elif roll < 0.5:
                created, updated = self.ago(60, 400), self.ago(0.5, 10)   # changed
            else:
                created = self.ago(60, 400)
                updated = created + datetime.timedelta(days=rng.uniform(0, 30))
            display = rng.random()
            display_until = None if display < 0.7 else stamp(
                self.now + datetime.timedelta(days=2 if display > 0.95 else rng.uniform(30, 180)))
            min_age = None if rng.random() < 0.5 else float(rng.choice((12, 14, 16, 18)))
            max_age = None if rng.random() < 0.7 else rng.choice((17.0, 17.5, 25.0, 65.0))
            flags = texts.schedule(rng, SCHEDULE_FLAGS, none_chance=0.3)
            rows.append((number, vnum, member_id, num, owner, display_until, min_age, max_age,
                         stamp(created), stamp(updated), f"{number:06X}"[:6], *flags))
            titles = texts.position(rng)
            if number == 3:
                titles = {0: 'Drivers & <Helpers> "Meals"', 2: "Chauffeurs & <aides> « repas »"}
            for lang_id in (0, 2) if rng.random() < 0.6 else (0,):
                descriptions.append((vnum, lang_id, 0, stamp(created), stamp(updated),
                                     titles[lang_id], texts.duties(rng, lang_id)))
            if rng.random() > 0.02:
                for cm_id in rng.sample(range(1, communities + 1), rng.randint(1, 3)):
                    op_cm.append((vnum, cm_id))
            op_sets.append((vnum, member_id))  # shown in the member's own views
            for ai_id in rng.sample(range(1, interests + 1), rng.randint(1, 3)):
                op_ai.append((vnum, ai_id))
            for sk_id in rng.sample(range(1, self.counts["skills"] + 1), rng.randint(0, 2)):
                op_sk.append((vnum, sk_id))
        self.bulk("VOL_Opportunity", ("OP_ID", "VNUM", "MemberID", "NUM", "RECORD_OWNER",
                                      "DISPLAY_UNTIL", "MIN_AGE", "MAX_AGE", "CREATED_DATE",
                                      "MODIFIED_DATE", "FBKEY", *SCHEDULE_FLAGS), rows)
        self.bulk("VOL_Opportunity_Description",
                  ("VNUM", "LangID", "NON_PUBLIC", "CREATED_DATE", "UPDATE_DATE",
                   "POSITION_TITLE", "DUTIES"), descriptions)
        self.bulk("VOL_OP_CM", ("VNUM", "CM_ID"), op_cm)
        self.bulk("VOL_OP_AI", ("VNUM", "AI_ID"), op_ai)
        self.bulk("VOL_OP_SK", ("VNUM", "SK_ID"), op_sk)
        self.bulk("VOL_OP_CommunitySet", ("VNUM", "CommunitySetID"), op_sets)
        self.history()

    def history(self):
        """Record changes: some organizations with shown positions became non-public or got
        a deletion date since yesterday; older and unrelated changes around them."""
        rng = self.rng
        linked = sorted(self.opportunity_orgs)
        rows = []
        for num, _ in rng.sample(linked, max(3, len(linked) // 20)):
            for lang_id in self.languages_of(num):
                field = rng.choice((1, 2))
                when = self.ago(0.05, 0.9)
                rows.append((num, lang_id, field, stamp(when), "admin", FIELDS[field]))
                if field == 1:
                    self.db.execute("UPDATE GBL_BaseTable_Description SET NON_PUBLIC = 1 "
                                    "WHERE NUM = ? AND LangID = ?", (num, lang_id))
                else:
                    self.db.execute("UPDATE GBL_BaseTable_Description SET DELETION_DATE = ? "
                                    "WHERE NUM = ? AND LangID = ?",
                                    (stamp(self.today + datetime.timedelta(days=30)), num, lang_id))
        for num, _ in rng.sample(linked, max(3, len(linked) // 10)):
            rows.append((num, 0, rng.choice((1, 2)), stamp(self.ago(3, 30)), "admin", "older"))
            rows.append((num, 0, rng.choice((3, 4, 5)), stamp(self.ago(0.05, 0.9)), "admin", "other"))
        self.bulk("GBL_BaseTable_History",
                  ("NUM", "LangID", "FieldID", "MODIFIED_DATE", "MODIFIED_BY", "FieldDisplay"), rows)

    def languages_of(self, num):
        return [r[0] for r in self.db.execute(
            "SELECT LangID FROM GBL_BaseTable_Description WHERE NUM = ?", (num,))]

    def profiles(self):
        rng, count = self.rng, self.counts["profiles"]
        communities, interests = self.counts["communities"], self.counts["interests"]
        rows, profile_cm, profile_ai = [], [], []
        for number in range(1, count + 1):
            profile_id = self.guid()
            lang_id = 2 if rng.random() < 0.4 else 0
            first, last = texts.person(rng, number)
            birth = datetime.datetime(rng.randint(1950, 2013), rng.randint(1, 12), rng.randint(1, 28))
            rows.append((
                profile_id, 1 if rng.random() < 0.7 else 2, texts.email(first, last, number),
                first, last, lang_id, stamp(birth), int(rng.random() < 0.8),
                int(rng.random() < 0.5), int(rng.random() < 0.95), int(rng.random() < 0.97),
                int(rng.random() < 0.01), self.guid(), stamp(self.ago(30, 900)),
                f"hash-of-profile-{number}", f"salt{number}", 1, 1,
                *texts.schedule(rng, SCHEDULE_FLAGS, none_chance=0.4),
            ))
            if rng.random() > 0.05:
                for cm_id in rng.sample(range(1, communities + 1), rng.randint(1, 3)):
                    profile_cm.append((profile_id, cm_id))
            if rng.random() > 0.3:
                for ai_id in rng.sample(range(1, interests + 1), rng.randint(1, 3)):
                    profile_ai.append((profile_id, ai_id))
        self.bulk("VOL_Profile", (
            "ProfileID", "MemberID", "Email", "FirstName", "LastName", "LangID", "BirthDate",
            "NotifyNew", "NotifyUpdated", "Verified", "Active", "Blocked", "UnsubscribeToken",
            "CREATED_DATE", "PasswordHash", "PasswordHashSalt", "OrgCanContact",
            "AgreedToPrivacyPolicy", *SCHEDULE_FLAGS), rows)
        self.bulk("VOL_Profile_CM", ("ProfileID", "CM_ID"), profile_cm)
        self.bulk("VOL_Profile_AI", ("ProfileID", "AI_ID"), profile_ai)

    def stats(self):
        """Usage stats: a history in the stats tables, yesterday's in the accumulators."""
        rng = self.rng
        records = self.db.execute("SELECT RSN, NUM, MemberID FROM GBL_BaseTable").fetchall()
        opportunities = self.db.execute(
            "SELECT OP_ID, VNUM, MemberID FROM VOL_Opportunity").fetchall()
        for table, count, keys, view_offset, key_columns in (
                ("CIC_Stats_RSN", self.counts["cic_stats"], records, 0, ("RSN", "NUM")),
                ("VOL_Stats_OPID", self.counts["vol_stats"], opportunities, 1, ("OP_ID", "VNUM"))):
            columns = ("MemberID", "AccessDate", "IPAddress", *key_columns, "LangID", "ViewType",
                       "API")
            accumulated = max(50, count // 40)
            for target, number, low, high in ((table, count, 1, 400),
                                              (f"{table}_Accumulator", accumulated, 0.01, 1)):
                self.bulk(target, columns, (
                    self.stats_row(rng, keys, view_offset, self.ago(low, high))
                    for _ in range(number)))

    @staticmethod
    def stats_row(rng, keys, view_offset, when):
        key, number, member_id = rng.choice(keys)
        address = f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
        return (member_id, stamp(when), address, key, number, rng.choice((0, 2)),
                member_id * 10 + view_offset, int(rng.random() < 0.05))

    def sharing(self):
        """Sharing profiles: one active, one whose revocation came due yesterday, one due
        next week; the records each shares."""
        revoked = stamp(self.now - datetime.timedelta(hours=12))
        later = stamp(self.today + datetime.timedelta(days=7))
        self.insert("GBL_SharingProfile", [
            dict(ProfileID=1, MemberID=1, ShareMemberID=2, Active=1),
            dict(ProfileID=2, MemberID=2, ShareMemberID=1, Active=1, RevokedDate=revoked),
            dict(ProfileID=3, MemberID=1, ShareMemberID=2, Active=1, RevokedDate=later)])
        shared = [n for n, _ in self.organizations_by_member[2][:10]]
        own = [n for n, _ in self.organizations_by_member[1][:10]]
        self.insert("GBL_BT_SharingProfile",
                    [dict(NUM=n, ProfileID=2, ShareMemberID_Cache=1) for n in shared]
                    + [dict(NUM=n, ProfileID=1, ShareMemberID_Cache=2) for n in own]
                    + [dict(NUM=n, ProfileID=3, ShareMemberID_Cache=2) for n in own[:5]])

    # -- every other table -------------------------------------------------------------

    def fill_every_table(self):
        """Give every empty table a row per member (one row when it belongs to no member),
        linked through its foreign keys to rows of that member."""
        owners = {}  # (table, rowid) -> member of the generic rows
        for name in self._dependency_order():
            if self.db.execute(f"SELECT 1 FROM {schema.quote(name)} LIMIT 1").fetchone():
                continue
            for member_id in range(1, MEMBERS + 1):
                row, owner = self._generic_row(name, member_id, owners)
                if owner is None and member_id > 1:
                    break  # shared by every member: one row is enough
                row = {k: v for k, v in row.items() if v is not None}
                try:
                    self.insert(name, [row])
                except sqlite3.IntegrityError:
                    continue
                rowid = self.db.execute("SELECT last_insert_rowid()").fetchone()[0]
                owners[(name, rowid)] = owner
                if owner is None:
                    break

    def _dependency_order(self):
        order, seen = [], set()

        def visit(name, path):
            if name in seen or name in path or name not in self.tables:
                return
            for foreign in self.tables[name].get("foreign_keys") or ():
                visit(foreign["table"], path | {name})
            seen.add(name)
            order.append(name)

        for name in sorted(self.tables):
            visit(name, frozenset())
        return order

    def _member_of(self, table, rowid, owners):
        columns = [c["name"] for c in self.tables[table]["columns"]]
        for column in MEMBER_COLUMNS:
            if column in columns:
                found = self.db.execute(f"SELECT {column} FROM {schema.quote(table)} "
                                        "WHERE rowid = ?", (rowid,)).fetchone()
                return found[0] if found else None
        return owners.get((table, rowid))

    def _generic_row(self, name, member_id, owners):
        """A row of table ``name`` for ``member_id`` and the member it belongs to (None when
        nothing ties it to a member)."""
        table = self.tables[name]
        columns = {c["name"]: c for c in table["columns"]}
        row, owner = {}, None
        for column in MEMBER_COLUMNS:
            if column in columns:
                row[column], owner = member_id, member_id
        for foreign in table.get("foreign_keys") or ():
            parent = foreign["table"]
            if parent not in self.tables or any(c in row for c in foreign["columns"]):
                continue
            picked = self._parent_row(parent, foreign["ref"], member_id, owners)
            if picked is None:
                continue
            values, parent_owner = picked
            row.update(zip(foreign["columns"], values))
            if parent_owner is not None:
                owner = parent_owner
        if "LangID" in columns and "LangID" not in row:
            row["LangID"] = 0
        for column in table["columns"]:
            if column["name"] in row or column.get("identity"):
                continue
            if column["type"] in ("varchar", "nvarchar", "char", "nchar", "text", "ntext"):
                text = f"{name}.{column['name']} of member {member_id}"
                length = column.get("length")
                if length not in (None, "max"):
                    text = text[-int(length):] if int(length) < 12 else text[:int(length)]
                row[column["name"]] = text
        return row, owner

    def _parent_row(self, parent, ref, member_id, owners):
        """Values of ``ref`` from a row of ``parent`` belonging to ``member_id`` if there is
        one, else from a row belonging to no member; with that row's member."""
        quoted = ", ".join(schema.quote(c) for c in ref)
        fallback = None
        for rowid, *values in self.db.execute(
                f"SELECT rowid, {quoted} FROM {schema.quote(parent)} ORDER BY rowid LIMIT 50"):
            owner = self._member_of(parent, rowid, owners)
            if owner == member_id:
                return values, owner
            if owner is None and fallback is None:
                fallback = (values, None)
        return fallback
