"""Which new and changed positions match which volunteer profiles, by the rules of CIOC's
volunteer search (includes/search/incSearchVOL.asp, with the profile as the searcher).

- Communities: the position's list (fn_VOL_VNUMToCommSrchList: its communities, their
  children and parents) shares one with the profile's. A profile with no communities
  matches nothing.
- Interests: when the profile has interests the position must share one; else any.
- Age: when the profile has an age, MIN_AGE is null or at most the age, and MAX_AGE is
  null, or at least the age, or a whole number with the age below MAX_AGE + 1.
- Schedule: when the profile chose any day-and-time flags, the position must have one of
  them set; a position with no flags set is then left out. A profile with no flags puts
  no condition.
- A position is new when any of its descriptions was created in the window
  (NEWLY_CREATED), else changed when any was updated in it (CHANGED). New positions go
  to profiles with NotifyNew, changed ones to profiles with NotifyUpdated.

``matches`` states the rules for one pair; ``match_all`` gives the same answers for whole
batches, fast, through indexes of profiles by community, interest and schedule flag.
"""

import math

from cioctasks import procs

FLAGS = procs.SCHEDULE_FLAGS


def id_set(text):
    """The IDs of a comma list ("1,20,7") as a frozenset of ints."""
    if text is None:
        return frozenset()
    if isinstance(text, (set, frozenset, list, tuple)):
        return frozenset(int(i) for i in text)
    return frozenset(int(part) for part in str(text).split(",") if part.strip())


def schedule_mask(row):
    mask = 0
    for bit, flag in enumerate(FLAGS):
        if row.get(flag):
            mask |= 1 << bit
    return mask


def number(value):
    """A decimal(5,2) column (a Decimal from SQL Server; a float, or its text, from the
    sample's driver; or None) as a float or None."""
    return None if value is None else float(value)


def flag(value):
    """A FOR XML attribute of a CASE ... THEN 1 ELSE '' END (typed int, so "1" or "0"; ""
    or absent taken as 0) or a bit column, as a bool."""
    if isinstance(value, str):
        value = value.strip()
        return value not in ("", "0") and value.lower() != "false"
    return bool(value)


class Opportunity:
    """A position of the notification window, from a sp_VOL_Profile_Notify row."""

    def __init__(self, row):
        self.row = row
        self.vnum = row["VNUM"]
        self.communities = id_set(row.get("COMMUNITIES"))
        self.interests = id_set(row.get("INTERESTS"))
        self.schedule = schedule_mask(row)
        self.min_age = number(row.get("MIN_AGE"))
        self.max_age = number(row.get("MAX_AGE"))
        # OP_NAME has one entry per description language. A position counts as new when
        # any description was created in the window, as the procedure itself ranks new
        # positions first (its ORDER BY: EXISTS a description created in the window), so a
        # position is new or changed alike for English and French profiles. Created and
        # changed in the same window counts as new.
        names = row.get("OP_NAME") or []
        self.new = any(flag(n.get("NEWLY_CREATED")) for n in names)
        self.changed = not self.new and any(flag(n.get("CHANGED")) for n in names)


class Profile:
    """A volunteer profile, from a sp_VOL_Profile_Notify row and its VOL_Profile.NotifyNew
    (the procedure returns profiles with NotifyNew or NotifyUpdated set but only the
    second column, so the caller reads NotifyNew itself)."""

    def __init__(self, row, notify_new):
        self.row = row
        self.profile_id = row["ProfileID"]
        self.communities = id_set(row.get("COMMUNITIES"))
        self.interests = id_set(row.get("INTERESTS"))
        self.schedule = schedule_mask(row)
        self.age = number(row.get("AGE"))
        self.wants_new = flag(notify_new)
        self.wants_changed = flag(row.get("NotifyUpdated"))


def age_fits(opportunity, age):
    if age is None:
        return True
    if opportunity.min_age is not None and opportunity.min_age > age:
        return False
    top = opportunity.max_age
    if top is None or top >= age:
        return True
    return math.floor(top) == top and age < top + 1


def matches(profile, opportunity):
    """True if the position goes in this profile's message."""
    if not (profile.communities & opportunity.communities):
        return False
    if profile.interests and not (profile.interests & opportunity.interests):
        return False
    if not age_fits(opportunity, profile.age):
        return False
    # incSearchVOL.asp ORs the searcher's chosen SCH_* flags into one condition,
    # "(SCH_M_Morning=1 OR SCH_TU_Evening=1 ...)", and adds it only when some were chosen:
    # a position with no flags set fails it; a profile with none chosen adds nothing.
    if profile.schedule and not (profile.schedule & opportunity.schedule):
        return False
    if opportunity.new:
        return profile.wants_new
    return opportunity.changed and profile.wants_changed


def match_all(profiles, opportunities):
    """Return {profile index: [opportunity indexes in the given order]} for every profile
    with at least one match, by the same rules as ``matches``."""
    by_community, by_interest, by_flag = {}, {}, {}
    no_interests, no_schedule, wants_new, wants_changed = set(), set(), set(), set()
    for index, profile in enumerate(profiles):
        for cm_id in profile.communities:
            by_community.setdefault(cm_id, set()).add(index)
        if profile.interests:
            for ai_id in profile.interests:
                by_interest.setdefault(ai_id, set()).add(index)
        else:
            no_interests.add(index)
        if profile.schedule:
            for bit in range(len(FLAGS)):
                if profile.schedule >> bit & 1:
                    by_flag.setdefault(bit, set()).add(index)
        else:
            no_schedule.add(index)
        if profile.wants_new:
            wants_new.add(index)
        if profile.wants_changed:
            wants_changed.add(index)
    empty = set()
    ages = [p.age for p in profiles]

    found = [[] for _ in profiles]
    for o_index, opportunity in enumerate(opportunities):
        if opportunity.new:
            wanted = wants_new
        elif opportunity.changed:
            wanted = wants_changed
        else:
            continue
        candidates = set().union(*(by_community.get(c, empty) for c in opportunity.communities))
        candidates &= wanted
        if not candidates:
            continue
        chosen = candidates & no_interests
        for ai_id in opportunity.interests:
            chosen |= candidates & by_interest.get(ai_id, empty)
        if chosen:
            # The schedule rule of ``matches``: profiles that chose no times, and those that
            # chose one the position has; a position with no flags keeps only the first.
            scheduled = chosen & no_schedule
            for bit in range(len(FLAGS)):
                if opportunity.schedule >> bit & 1:
                    scheduled |= chosen & by_flag.get(bit, empty)
            chosen = scheduled
        if opportunity.min_age is not None or opportunity.max_age is not None:
            chosen = _age_filter(chosen, ages, opportunity)
        for p_index in chosen:
            found[p_index].append(o_index)
    return {p_index: found_ for p_index, found_ in enumerate(found) if found_}


def _age_filter(chosen, ages, opportunity):
    """The profiles of ``chosen`` whose age fits, as ``age_fits`` says, with the bounds
    worked out once per position instead of once per profile."""
    low = opportunity.min_age if opportunity.min_age is not None else -math.inf
    top = opportunity.max_age
    if top is None:
        return {i for i in chosen if ages[i] is None or ages[i] >= low}
    if math.floor(top) == top:  # a whole MAX_AGE takes anyone below MAX_AGE + 1
        return {i for i in chosen if ages[i] is None or low <= ages[i] < top + 1}
    return {i for i in chosen if ages[i] is None or low <= ages[i] <= top}
