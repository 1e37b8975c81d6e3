"""The study store: SQLAlchemy models, Alembic migrations, and the query functions in :mod:`.repo`.

Typical use::

    from nero_study.store import db, repo

    db.upgrade(url)                                # once, at start-up (schema only via migrations)
    Session = db.session_factory(db.make_engine(url))
    with Session() as session:
        sweep = repo.create_sweep(session, spec=spec_dict, name="demo")[0]

Importing this package connects to nothing.
"""

from nero_study.store.db import make_engine, session_factory, upgrade
from nero_study.store.models import ApiToken, Base, MetricPoint, Sweep, Trial

__all__ = ["ApiToken", "Base", "MetricPoint", "Sweep", "Trial", "make_engine", "session_factory", "upgrade"]
