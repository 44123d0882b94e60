"""The rows of one sample CIOC database: deterministic for a seed and a build day, English
and French, with dates placed relative to the build day so that every task finds work on
its first run.
"""

import datetime
import uuid

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
SCHEDULE_FLAGS = [c.split()[0] for c in schema.SCHEDULE_COLUMNS.strip().split(",\n")]


def stamp(moment):
    """A datetime as the text the SQLite ODBC driver binds: millisecond precision."""
    return moment.isoformat(sep=" ", timespec="milliseconds")


class Generator:
    def __init__(self, connection, site, scale, rng, now):
        self.db = connection
        self.site = site
        self.counts = SCALES[scale]
        self.rng = rng
        self.now = now
        self.today = datetime.datetime.combine(now.date(), datetime.time())

    def guid(self):
        return "{" + str(uuid.UUID(int=self.rng.getrandbits(128), version=4)).upper() + "}"

    def ago(self, days_low, days_high):
        seconds = self.rng.uniform(days_low * 86400, days_high * 86400)
        return self.now - datetime.timedelta(seconds=seconds)

    def insert(self, table, rows):
        rows = list(rows)
        if rows:
            marks = ", ".join("?" for _ in rows[0])
            self.db.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)
        return rows

    def run(self):
        self.db.execute("BEGIN")
        self.insert("STP_Language", [(0, "en-CA"), (2, "fr-CA")])
        self.insert("GBL_FieldOption", FIELDS.items())
        self.members()
        self.communities()
        self.interests_and_skills()
        self.agencies()
        self.organizations()
        self.opportunities()
        self.profiles()
        self.stats()
        self.sharing()
        self.db.execute("COMMIT")
        self.db.executescript(schema.INDEXES)

    def base_url(self, member_id):
        return f"https://{self.site}.cioc.ca" if member_id == 1 else \
            f"https://{self.site}-m{member_id}.cioc.ca"

    def members(self):
        site, title = self.site, self.site.capitalize()
        rows, names, views, view_names, domains = [], [], [], [], []
        for member_id in range(1, MEMBERS + 1):
            last_mail = stamp(self.today - datetime.timedelta(days=4)) if member_id == 1 else None
            rows.append((
                member_id, f"{site.upper()}{member_id}", 1, 1, 1, last_mail,
                self.base_url(member_id).replace("https://", "https://cic-"),
                self.base_url(member_id), member_id * 10, member_id * 10 + 1,
                f"benevolat@{site}{member_id}.example.org",
                f"Centre d'action bénévole {title} {member_id}",
                f"profils@{site}{member_id}.example.org" if member_id == 1 else None,
                1, f"Cic#{site[:10]}{member_id}", f"Vol#{site[:10]}{member_id}",
                1 if member_id == 2 else 0,
            ))
            names += [(member_id, 0, f"{title} Community Services {member_id}"),
                      (member_id, 2, f"Services communautaires {title} {member_id}")]
            views.append((member_id * 10 + 1, member_id))
            view_names += [(member_id * 10 + 1, 0, "Volunteer"), (member_id * 10 + 1, 2, "Bénévolat")]
            host = self.base_url(member_id).replace("https://", "")
            domains += [(member_id, host, 0), (member_id, f"www.{title}{member_id}Example.ORG", 0)]
            if member_id == 1:
                domains.append((member_id, host.replace(".cioc.ca", "-fr.cioc.ca"), 1))
            domains.append((member_id, f"benevoles.{site}{member_id}.example.qc.ca", 1))
        # A group with no name under cioc.ca: the offline map must report it, not guess.
        domains.append((2, f"only.{site}.example.net", 1))
        self.insert("STP_Member", rows)
        self.insert("STP_Member_Description", names)
        self.insert("VOL_View", views)
        self.insert("CIC_View", [(m * 10, m) for m in range(1, MEMBERS + 1)])
        self.insert("VOL_View_Description", view_names)
        self.insert("GBL_View_DomainMap", [
            (number, member_id, name, None, 0, member_id * 10, member_id * 10 + 1, secondary)
            for number, (member_id, name, secondary) in enumerate(domains, 1)
        ])

    def communities(self):
        count = self.counts["communities"]
        rows, names, parents = [], [], []
        for cm_id in range(1, count + 1):
            parent = None if cm_id <= REGIONS else (cm_id % REGIONS) + 1
            rows.append((cm_id, parent, "ON"))
            en, fr = texts.community(cm_id)
            names += [(cm_id, 0, en), (cm_id, 2, fr)]
            if parent:
                parents.append((cm_id, parent))
        self.insert("GBL_Community", rows)
        self.insert("GBL_Community_Name", names)
        self.insert("GBL_Community_ParentList", parents)
        self.insert("VOL_CommunitySet", [(m, m, f"Set {m}") for m in range(1, MEMBERS + 1)])
        self.insert("VOL_CommunitySet_CM", [
            (m, cm_id) for m in range(1, MEMBERS + 1) for cm_id in range(1, count + 1)
            if cm_id % 2 == m % 2 or cm_id <= REGIONS
        ])

    def interests_and_skills(self):
        for kind, table, count in (("interest", "VOL_Interest", self.counts["interests"]),
                                   ("skill", "VOL_Skill", self.counts["skills"])):
            self.insert(table, [(n, f"{kind[:2].upper()}{n}") for n in range(1, count + 1)])
            names = []
            for n in range(1, count + 1):
                en, fr = texts.label(kind, n)
                names += [(n, 0, en), (n, 2, fr)]
            self.insert(f"{table}_Name", names)
            mapped = [(n, texts.label(kind, n)[0]) for n in range(1, count + 1) if n % 4]
            self.insert(f"VOL_GetInvolved_{kind.capitalize()}", mapped)

    def agencies(self):
        self.agency_codes = {m: [] for m in range(1, MEMBERS + 1)}
        rows = []
        for number in range(1, 4 * MEMBERS + 1):
            member_id = 1 + (number - 1) % MEMBERS
            code = texts.agency_code(number)
            self.agency_codes[member_id].append(code)
            email = None if number % 4 == 0 else f"{code.lower()}.records@{self.site}.example.org"
            synced = number <= MEMBERS
            rows.append((
                number, code, member_id, 1, 1, email,
                f"{code.lower()}@{self.site}.example.org" if synced else None,
                f"{self.rng.getrandbits(64):016x}" if synced else None,
                "https://testapi.getinvolved.ca/rpc" if synced else None,
                member_id if synced else None,
            ))
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
            base.append((num, member_id, owner, stamp(created), stamp(self.ago(1, 200))))
            self.organizations_by_member[member_id].append((num, owner))
            names = texts.organization(rng, number)
            for lang_id in (0, 2) if rng.random() < 0.6 else (0,):
                levels = names[lang_id]
                descriptions.append((num, lang_id, *levels, texts.place(rng, lang_id), 0, None,
                                     stamp(created), stamp(self.ago(1, 200))))
        self.insert("GBL_BaseTable", base)
        self.insert("GBL_BaseTable_Description", descriptions)

    def opportunities(self):
        rng, count = self.rng, self.counts["opportunities"]
        communities, interests = self.counts["communities"], self.counts["interests"]
        rows, descriptions, op_cm, op_ai, op_sk = [], [], [], [], []
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
            rows.append((vnum, member_id, num, owner, display_until, min_age, max_age,
                         stamp(created), stamp(updated), *flags))
            titles = texts.position(rng)
            for lang_id in (0, 2) if rng.random() < 0.6 else (0,):
                descriptions.append((vnum, lang_id, 0, stamp(created), stamp(updated), None,
                                     titles[lang_id], texts.duties(rng, lang_id)))
            if rng.random() > 0.02:
                for cm_id in rng.sample(range(1, communities + 1), rng.randint(1, 3)):
                    op_cm.append((vnum, cm_id))
            for ai_id in rng.sample(range(1, interests + 1), rng.randint(1, 3)):
                op_ai.append((vnum, ai_id))
            for sk_id in rng.sample(range(1, self.counts["skills"] + 1), rng.randint(0, 2)):
                op_sk.append((vnum, sk_id))
        self.insert("VOL_Opportunity", rows)
        self.insert("VOL_Opportunity_Description", descriptions)
        self.insert("VOL_OP_CM", op_cm)
        self.insert("VOL_OP_AI", op_ai)
        self.insert("VOL_OP_SK", op_sk)
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
        self.insert("GBL_BaseTable_History", [(None, *row) for row in rows])

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
                *texts.schedule(rng, SCHEDULE_FLAGS, none_chance=0.4),
            ))
            if rng.random() > 0.05:
                for cm_id in rng.sample(range(1, communities + 1), rng.randint(1, 3)):
                    profile_cm.append((profile_id, cm_id))
            if rng.random() > 0.3:
                for ai_id in rng.sample(range(1, interests + 1), rng.randint(1, 3)):
                    profile_ai.append((profile_id, ai_id))
        self.insert("VOL_Profile", rows)
        self.insert("VOL_Profile_CM", profile_cm)
        self.insert("VOL_Profile_AI", profile_ai)

    def stats(self):
        rng = self.rng
        nums = [n for n, _ in self.organizations_by_member[1]] or ["NONE0001"]
        vnums = [f"V{n:06}" for n in range(1, self.counts["opportunities"] + 1)]
        for table, count, keys in (("CIC_Stats_RSN", self.counts["cic_stats"], nums),
                                   ("VOL_Stats_OPID", self.counts["vol_stats"], vnums)):
            accumulated = max(50, count // 40)
            rows = (self.stats_row(table, rng, keys, self.ago(1, 400)) for _ in range(count))
            self.db.executemany(f"INSERT INTO {table} VALUES ({self.marks(table, True)})",
                                ((None, *row) for row in rows))
            yesterday = (self.stats_row(table, rng, keys, self.ago(0.01, 1))
                         for _ in range(accumulated))
            self.db.executemany(
                f"INSERT INTO {table}_Accumulator VALUES ({self.marks(table, False)})", yesterday)

    @staticmethod
    def marks(table, with_id):
        width = (10 if table == "CIC_Stats_RSN" else 9) - (0 if with_id else 1)
        return ", ".join("?" * width)

    @staticmethod
    def stats_row(table, rng, keys, when):
        member_id = 1 if rng.random() < 0.85 else 2
        address = f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
        robot = 1 if rng.random() < 0.05 else None
        if table == "CIC_Stats_RSN":
            return (member_id, stamp(when), address, rng.randint(1, 50000), rng.choice(keys),
                    rng.choice((0, 2)), None, member_id * 10, robot)
        return (member_id, stamp(when), address, rng.choice(keys), rng.choice((0, 2)), None,
                member_id * 10 + 1, robot)

    def sharing(self):
        revoked = stamp(self.now - datetime.timedelta(hours=12))
        later = stamp(self.today + datetime.timedelta(days=7))
        self.insert("GBL_SharingProfile", [(1, 1, 2, 1, None), (2, 2, 1, 1, revoked),
                                           (3, 1, 2, 1, later)])
        shared = [n for n, _ in self.organizations_by_member[2][:10]]
        own = [n for n, _ in self.organizations_by_member[1][:10]]
        self.insert("GBL_BT_SharingProfile",
                    [(n, 2) for n in shared] + [(n, 1) for n in own] + [(n, 3) for n in own[:5]])
