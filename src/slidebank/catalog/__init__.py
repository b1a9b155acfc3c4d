"""The catalogue: what is in the repository, in the BIGPICTURE (MetaFleX) shape.

Tables in :mod:`tables`, schema migrations in ``migrations/`` (Alembic), engines and sessions
in :mod:`database`, reads and writes in :mod:`queries`. Nothing here commits: the caller owns
the transaction.
"""
