"""The sample CIOC world: SQLite databases with CIOC's schema, reached through real UDL
files and the SQLite3 ODBC driver, plus the site folders and logs the tasks work on.

    python -m cioctasks.sampledb create DIR [--sites N] [--scale small|medium|large] [--seed S]
"""

from cioctasks.sampledb.generate import SCALES  # noqa: F401 (re-exported)
from cioctasks.sampledb.world import World, create  # noqa: F401 (re-exported)
