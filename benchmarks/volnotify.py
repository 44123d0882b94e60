"""Volunteer notification at sample scale ``large``: 100,000 profiles, 5,000 positions.

1. Matching: volnotify's indexed matcher against a plain nested loop over the same rules
   (``matching.matches`` for every pair), same run. The nested loop runs on a slice of the
   profiles and is scaled up (it is linear in them); both must agree on that slice.
   Target: at least 20x faster.
2. Messages rendered and delivered per second to a local SMTP server (aiosmtpd).

    python benchmarks/volnotify.py [--profiles N] [--opportunities N] [--slice N] [--messages N]
"""

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "volnotify"))
sys.path.insert(0, str(ROOT / "tests"))

import matching  # noqa: E402
import volnotify  # noqa: E402


def flags(rng, none_chance):
    """All 21 SCH_* bit columns, as the procedure returns them; none set by ``none_chance``."""
    chosen = () if rng.random() < none_chance else rng.sample(matching.FLAGS, rng.randint(1, 5))
    return {f: f in chosen for f in matching.FLAGS}


def make_opportunities(rng, count, communities=300, interests=80):
    result = []
    for n in range(count):
        roll = rng.random()
        row = {"VNUM": f"V{n:06}", "MemberID": 1, "AccessURL": None,
               "COMMUNITIES": ",".join(map(str, rng.sample(range(1, communities), rng.randint(2, 6)))),
               "INTERESTS": ",".join(map(str, rng.sample(range(1, interests), rng.randint(1, 3)))),
               "MIN_AGE": None if rng.random() < 0.5 else rng.choice((12, 14, 16, 18)),
               "MAX_AGE": None if rng.random() < 0.7 else rng.choice((17, 17.5, 25, 65)),
               # sp_VOL_Profile_Notify's FOR XML columns as procs.decode_xml gives them
               "OP_NAME": [{"POSITION_TITLE": f"Position {n}", "Culture": "en-CA",
                            "NEWLY_CREATED": str(int(roll < 0.6)),
                            "CHANGED": str(int(roll >= 0.5))}],
               "ORG_NAME": [{"ORG_LEVEL_1": f"Organization {n % 500}", "Culture": "en-CA"}],
               "ViewInfo": [{"AccessURL": "bench.cioc.ca", "Culture": "en-CA"},
                            {"ViewType": "12", "AccessURL": "bench.cioc.ca", "Culture": "fr-CA"}]}
        row.update(flags(rng, 0.3))
        result.append(matching.Opportunity(row))
    return result


def make_profiles(rng, count, communities=300, interests=80):
    """Profiles as sp_VOL_Profile_Notify returns them (no NotifyNew column), each with the
    NotifyNew volnotify reads from VOL_Profile."""
    result = []
    for n in range(count):
        row = {"MemberID": 1, "ProfileID": f"{{{n:08X}-0000-4000-8000-000000000000}}",
               "FirstName": "Zoé", "LastName": "Roy",
               "Email": f"volunteer{n}@example.org", "Culture": rng.choice(("en-CA", "fr-CA")),
               "UnsubscribeToken": "0f8fad5b-d9cb-469f-a165-70867728950e",
               "COMMUNITIES": ",".join(map(str, rng.sample(range(1, communities), rng.randint(1, 3)))),
               "INTERESTS": "" if rng.random() < 0.3 else
               ",".join(map(str, rng.sample(range(1, interests), rng.randint(1, 3)))),
               "AGE": None if rng.random() < 0.2 else rng.uniform(13, 80),
               "NotifyUpdated": rng.random() < 0.5}
        row.update(flags(rng, 0.4))
        result.append(matching.Profile(row, notify_new=rng.random() < 0.8))
    return result


def nested_loop(profiles, opportunities):
    found = {}
    for p_index, profile in enumerate(profiles):
        for o_index, opportunity in enumerate(opportunities):
            if matching.matches(profile, opportunity):
                found.setdefault(p_index, []).append(o_index)
    return found


def deliver(profiles, opportunities, found, count):
    from smtpserver import SMTPServer

    from cioctasks import config, mail

    renderer = volnotify.Renderer()
    settings_row = {"BaseURL": "bench.cioc.ca", "DefaultEmailVOLProfile": "vol@bench.example",
                    "DefaultEmailNameVOL": "Centre d'action bénévole"}
    chosen = list(found.items())[:count]
    with tempfile.TemporaryDirectory() as folder, SMTPServer() as server:
        settings = config.from_mapping({"CIOC_TOOLS_PATH": folder, "CIOC_MAIL_PORT": str(server.port)})
        started = time.perf_counter()
        with mail.Mailer(settings).session() as session:
            for p_index, o_indexes in chosen:
                message = volnotify.build_message(renderer, settings_row, profiles[p_index],
                                                  [opportunities[i] for i in o_indexes])
                session.send(message)
        server.wait_for(len(chosen), timeout=60)
        return len(chosen), time.perf_counter() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", type=int, default=100_000)
    parser.add_argument("--opportunities", type=int, default=5_000)
    parser.add_argument("--slice", type=int, default=2_000, help="profiles the nested loop runs on")
    parser.add_argument("--messages", type=int, default=2_000)
    args = parser.parse_args()
    rng = random.Random(1)
    opportunities = make_opportunities(rng, args.opportunities)
    profiles = make_profiles(rng, args.profiles)

    started = time.perf_counter()
    found = matching.match_all(profiles, opportunities)
    indexed = time.perf_counter() - started
    pairs = sum(len(v) for v in found.values())

    part = profiles[:args.slice]
    started = time.perf_counter()
    expected = nested_loop(part, opportunities)
    loop = (time.perf_counter() - started) * len(profiles) / len(part)
    sliced = {k: sorted(v) for k, v in matching.match_all(part, opportunities).items()}
    assert sliced == expected, "the indexed matcher and the rules disagree"

    print(f"matching {len(profiles):,} profiles x {len(opportunities):,} positions "
          f"({pairs:,} matches, {len(found):,} volunteers)")
    print(f"  indexed matcher        {indexed:8.2f}s")
    print(f"  nested loop (scaled)   {loop:8.2f}s  (measured on {len(part):,} profiles)")
    print(f"  speed-up {loop / indexed:.1f}x (target >= 20x)")
    sent, seconds = deliver(profiles, opportunities, found, args.messages)
    print(f"delivery: {sent:,} messages rendered and sent over one SMTP connection in "
          f"{seconds:.2f}s = {sent / seconds:,.0f} messages/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
