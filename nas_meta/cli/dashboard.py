"""``dashboard``: optuna-dashboard on a study's storage (the optional ``dashboard`` extra).

python cli.py dashboard --study chain-protonet-glyphs          # http://127.0.0.1:8080
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from typing import Any

from ..errors import ConfigError
from .common import add_study_options

__all__ = ["add_parsers", "cmd_dashboard"]


def add_parsers(sub: Any) -> None:
    dashboard = sub.add_parser("dashboard", help="browse a study in optuna-dashboard (the dashboard extra)")
    add_study_options(dashboard, many=False)
    dashboard.add_argument("--host", default="127.0.0.1", help="address to serve on (default: 127.0.0.1)")
    dashboard.add_argument("--port", type=int, default=8080, help="port (default: 8080)")
    dashboard.set_defaults(run=cmd_dashboard)


def cmd_dashboard(args: argparse.Namespace) -> int:
    if importlib.util.find_spec("optuna_dashboard") is None:
        raise ConfigError("dashboard needs optuna-dashboard, which is not installed; pip install -e '.[dashboard]'")
    if not 0 < args.port < 65536:
        raise ConfigError(f"--port must be between 1 and 65535, got {args.port}")
    run_server = importlib.import_module("optuna_dashboard").run_server

    from ..search.study import find_studies, open_storage, redact_url

    [(name, url)] = find_studies([args.study], args.storage, args.results_dir)
    print(f"study {name!r} in {redact_url(url)}: http://{args.host}:{args.port}/dashboard/ (Ctrl-C stops)")
    sys.stdout.flush()
    run_server(open_storage(url, study=name), host=args.host, port=args.port)  # reading never creates
    return 0
