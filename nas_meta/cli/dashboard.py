"""``dashboard``: optuna-dashboard on a study's storage (the optional ``dashboard`` extra).

python cli.py dashboard --study chain-protonet-glyphs          # http://127.0.0.1:8080
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import socket
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
    check_address(args.host, args.port)
    print(f"study {name!r} in {redact_url(url)}: http://{args.host}:{args.port}/dashboard/ (Ctrl-C stops)")
    sys.stdout.flush()
    run_server(open_storage(url, study=name), host=args.host, port=args.port)  # reading never creates
    return 0


def check_address(host: str, port: int) -> None:
    """ConfigError when the server could not listen on ``host:port``: a host that does not resolve,
    a port already in use or not allowed.  Tried by binding a socket, before the server starts."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise ConfigError(f"--host {host!r} does not resolve to an address of this machine: {exc.strerror}") from None
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does
        try:
            probe.bind(address)
        except OSError as exc:
            raise ConfigError(
                f"cannot serve on {host}:{port}: {exc.strerror or exc}; choose another --port or --host"
            ) from None
