"""The HTTP tier: the ``/v1`` JSON API as its own FastAPI service (``studentwork api``).

It reads PostgreSQL and writes to the outbox, nothing else, so it runs and scales apart
from the stream workers: a traffic peak of students in June does not slow the ledger.
"""
