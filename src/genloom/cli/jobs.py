"""`genloom jobs …`: submit and follow async jobs on a running server."""

from __future__ import annotations

import typer

jobs_app = typer.Typer(help="Submit and follow async jobs on a running server.", no_args_is_help=True)
