"""The raw request log: every generation request, recorded in SQL through SQLAlchemy async."""

from genloom.store.database import Database
from genloom.store.records import RequestEntry, RequestStatus
from genloom.store.request_log import RequestLog

__all__ = ["Database", "RequestEntry", "RequestLog", "RequestStatus"]
