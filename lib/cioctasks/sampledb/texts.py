"""English and French text for the sample database: names, places, positions, duties.

A few values are hostile on purpose (line breaks, header injection attempts, very long
names): the tasks must never let them break a mail header or a file name.
"""

import unicodedata

REGIONS = [("Eastern Ontario", "Est de l'Ontario"), ("Northern Ontario", "Nord de l'Ontario"),
           ("Ottawa Valley", "Vallée de l'Outaouais"), ("Central Ontario", "Centre de l'Ontario"),
           ("Prescott-Russell", "Prescott-Russell")]
TOWNS = ["Ottawa", "Kingston", "Sudbury", "Timmins", "Hearst", "Cornwall", "Hawkesbury",
         "Orléans", "Sault Ste. Marie", "Thunder Bay", "Kapuskasing", "Rockland", "Embrun",
         "Casselman", "Pembroke", "Petawawa", "Elliot Lake", "North Bay", "Mattawa", "Chéneville"]
INTERESTS = [("Arts and culture", "Arts et culture"), ("Children and youth", "Enfants et jeunes"),
             ("Seniors", "Aînés"), ("Environment", "Environnement"), ("Health", "Santé"),
             ("Sports", "Sports"), ("Literacy", "Alphabétisation"), ("Food security", "Sécurité alimentaire"),
             ("Newcomers", "Nouveaux arrivants"), ("Animals", "Animaux"), ("Housing", "Logement"),
             ("Justice", "Justice")]
SKILLS = [("Driving", "Conduite"), ("Cooking", "Cuisine"), ("Teaching", "Enseignement"),
          ("Translation", "Traduction"), ("Accounting", "Comptabilité"), ("First aid", "Premiers soins"),
          ("Carpentry", "Menuiserie"), ("Social media", "Médias sociaux")]
ORGANIZATIONS = [("Community Food Bank", "Banque alimentaire communautaire"),
                 ("Youth Services", "Services à la jeunesse"), ("Seniors' Centre", "Centre des aînés"),
                 ("Literacy Council", "Conseil d'alphabétisation"), ("Housing Help", "Aide au logement"),
                 ("Family Resource Centre", "Centre de ressources familiales"),
                 ("Arts Council", "Conseil des arts"), ("Hospice", "Maison de soins palliatifs"),
                 ("Immigrant Services", "Services aux immigrants"), ("Sports Club", "Club sportif"),
                 ("Friends of the Library", "Amis de la bibliothèque"),
                 ("Environmental Network", "Réseau environnemental")]
PROGRAMS = [("Meals on Wheels", "Popote roulante"), ("Homework Club", "Club des devoirs"),
            ("Drop-in", "Halte-accueil"), ("Board of Directors", "Conseil d'administration")]
POSITIONS = [("Driver", "Chauffeur"), ("Tutor", "Tuteur ou tutrice"),
             ("Board member", "Membre du conseil"), ("Event helper", "Aide aux événements"),
             ("Friendly visitor", "Visiteur amical"), ("Kitchen helper", "Aide-cuisinier"),
             ("Receptionist", "Réceptionniste"), ("Coach", "Entraîneur"),
             ("Gardener", "Jardinier ou jardinière"), ("Translator", "Traducteur")]
FIRST = ["Éloïse", "Zoé", "André", "Chloé", "Marc-Antoine", "Siobhan", "Amélie", "Liam",
         "Noémie", "François", "Priya", "Jürgen", "Mónica", "Wei", "Gaëlle", "Kwame"]
LAST = ["Tremblay", "Gagnon", "Côté", "O'Brien", "Lefèbvre", "Smith", "Bélanger", "MacDonald",
        "Nguyen", "Lévesque", "Roy", "Morin", "D'Amours", "Okafor"]
INJECTION = "\r\nBcc: attacker@example.com"


def community(cm_id):
    if cm_id <= len(REGIONS):
        return REGIONS[cm_id - 1]
    town = TOWNS[(cm_id - 1) % len(TOWNS)]
    suffix = "" if cm_id <= len(REGIONS) + len(TOWNS) else f" {cm_id}"
    return town + suffix, town + suffix


def label(kind, number):
    table = INTERESTS if kind == "interest" else SKILLS
    en, fr = table[(number - 1) % len(table)]
    if number > len(table):
        return f"{en} {number}", f"{fr} {number}"
    return en, fr


def agency_code(number):
    letters = "ABCDEFGHJKLMNPQRSTUVWXYZ"
    return "A" + letters[(number // len(letters)) % len(letters)] + letters[number % len(letters)]


def organization(rng, number):
    """Return {LangID: (ORG_LEVEL_1, ..., ORG_LEVEL_5)} for an organization."""
    en, fr = ORGANIZATIONS[number % len(ORGANIZATIONS)]
    town = TOWNS[number % len(TOWNS)]
    level_1 = (f"{town} {en}", f"{fr} de {town}")
    level_2 = (None, None)
    if rng.random() < 0.3:
        level_2 = PROGRAMS[number % len(PROGRAMS)]
    if number == 7:
        level_2 = ("Intake" + INJECTION, "Accueil" + INJECTION)
    if number == 11:
        level_1 = (level_1[0] + " " + "and Area Community Partnership " * 8,
                   level_1[1] + " " + "et partenariat communautaire régional " * 8)
    return {
        0: (level_1[0], level_2[0], None, None, None),
        2: (level_1[1], level_2[1], None, None, None),
    }


def place(rng, lang_id):
    town = rng.choice(TOWNS)
    return f"{town} office" if lang_id == 0 else f"Bureau de {town}"


def position(rng):
    en, fr = rng.choice(POSITIONS)
    return {0: en, 2: fr}


def duties(rng, lang_id):
    if lang_id == 0:
        return rng.choice(["Help our clients every week.", "Support the team at events.",
                           "Drive seniors to appointments; a clean licence is required."])
    return rng.choice(["Aider nos clients chaque semaine.", "Soutenir l'équipe lors des événements.",
                       "Conduire les aînés à leurs rendez-vous; permis requis."])


def schedule(rng, flags, none_chance):
    if rng.random() < none_chance:
        return [0] * len(flags)
    chosen = set(rng.sample(range(len(flags)), rng.randint(1, 5)))
    return [1 if i in chosen else 0 for i in range(len(flags))]


def person(rng, number):
    first, last = rng.choice(FIRST), rng.choice(LAST)
    if number == 5:
        first = "Jean" + INJECTION
    return first, last


def email(first, last, number):
    ascii_name = unicodedata.normalize("NFKD", f"{first}.{last}").encode("ascii", "ignore").decode()
    local = "".join(c for c in ascii_name.lower() if c.isalnum() or c in ".-")
    return f"{local.strip('.')[:40]}{number}@example.org"
