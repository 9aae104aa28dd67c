"""`effiscope worker`: speak the worker protocol on stdin/stdout (what the app, torchrun and
ssh start; profiler.engine.worker)."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("worker", help="speak the worker protocol on stdin/stdout (used by the app, "
                                      "torchrun and ssh)")
    p.set_defaults(func=cmd_worker)


def cmd_worker(args: argparse.Namespace) -> int:
    from profiler.engine.worker import main as worker_main

    return worker_main([])
