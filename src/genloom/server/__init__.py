"""The composition root: builds every component from the settings tree (`wiring.py`) and runs
them as one process of a role (`roles.py`, `lifecycle.py`). The only package that knows all
the others."""

from genloom.server.lifecycle import GenloomServer
from genloom.server.roles import Process, StartupError, run

__all__ = ["GenloomServer", "Process", "StartupError", "run"]
