"""Ordered SQL migrations, applied idempotently and recorded in ``schema_migrations``."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from importlib import resources

from shared.kernel.db.database import Database
from shared.kernel.db.queries import Queries

_log = logging.getLogger(__name__)
_Q = Queries("shared.kernel.db")

# Any fixed number works; it only has to be the same for every process migrating this database.
_ADVISORY_LOCK = 0x6D6B7470  # "mktp"


@dataclass(frozen=True)
class Migration:
    """One ``NNNN_name.sql`` file."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        """A digest of the file, to notice an applied migration edited afterwards."""
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations() -> list[Migration]:
    """Every migration shipped in ``shared/kernel/db/migrations``, in order."""
    found: list[Migration] = []
    for entry in resources.files("shared.kernel.db.migrations").iterdir():
        if not entry.name.endswith(".sql"):
            continue
        stem = entry.name.removesuffix(".sql")
        number, _, name = stem.partition("_")
        found.append(Migration(int(number), name, entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"two migrations share a version number: {versions}")
    return found


def apply_migrations(db: Database) -> list[Migration]:
    """Apply what is missing, each file in its own transaction; returns what was applied.

    A session-level advisory lock makes concurrent processes (several server processes starting
    at once) take turns: the second finds everything applied.
    """
    applied_now: list[Migration] = []
    with db.connection() as conn:
        conn.execute(_Q.create_migrations_table)
        conn.execute(_Q.lock_migrations, (_ADVISORY_LOCK,))
        try:
            done = {int(v): c for v, c in conn.execute(_Q.applied_migrations)}
            for mig in load_migrations():
                if mig.version in done:
                    if done[mig.version] != mig.checksum:
                        _log.warning("migration %s was edited after it was applied", mig.version)
                    continue
                _log.info("applying migration %04d_%s", mig.version, mig.name)
                with conn.transaction():
                    conn.execute(mig.sql.encode(), prepare=False)  # unprepared, without parameters: a whole script
                    conn.execute(_Q.record_migration, (mig.version, mig.name, mig.checksum))
                applied_now.append(mig)
        finally:
            conn.execute(_Q.unlock_migrations, (_ADVISORY_LOCK,))
    return applied_now


def database_version(db: Database) -> str:
    """The server's version (``SHOW server_version``)."""
    with db.read() as tx:
        return str(tx.fetch_val(_Q.server_version))


def schema_version(db: Database) -> int:
    """The newest applied migration (0 when none)."""
    with db.transaction() as tx:
        return int(tx.fetch_val(_Q.schema_version) or 0)
