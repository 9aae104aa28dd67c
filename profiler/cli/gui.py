"""`effiscope gui` (and `effiscope` with no command): the desktop app. The one place the CLI
imports app/ (allowed by name in .importlinter)."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("gui", help="open the desktop app")
    p.set_defaults(func=cmd_gui)


def cmd_gui(args: argparse.Namespace) -> int:
    from app.main import main as app_main

    return app_main([])
