"""Alembic migrations of the transaction log (run by ``appliance.txlog.database.migrate``).

Revisions are in ``versions/``, one file each, named ``v<rev>_<slug>.py``; revision ids are
four digits counting up. Each revision is written out in full (no import of ``schema.py``), so
an old revision keeps meaning what it meant; a test compares the migrated database with the
metadata in ``schema.py`` on SQLite and PostgreSQL.
"""
