"""`effiscope techniques`: every technique, whether this machine can run it (and why not), its
parameters and the order techniques are applied in."""

from __future__ import annotations

import argparse
import json

from profiler.cli.common import EXIT_OK, EXIT_USAGE, err


def add_parser(sub) -> None:
    p = sub.add_parser("techniques", help="list the techniques and whether this machine can run them")
    p.add_argument("--device", default=None, help="device to check (default: cuda if present, else cpu)")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(func=cmd_techniques)


def cmd_techniques(args: argparse.Namespace) -> int:
    from profiler.measure.capabilities import detect
    from techniques import registry

    try:
        caps = detect(args.device)
    except (RuntimeError, AssertionError) as exc:
        err(f"cannot inspect device {args.device!r} ({exc}); use cpu or cuda")
        return EXIT_USAGE
    rows = []
    for info in registry.all_techniques():
        why = registry.unavailable_reason(info, info.defaults(), caps)
        rows.append({
            "name": info.name, "label": info.label, "category": info.category, "stage": info.stage,
            "available": why is None, "reason": why or "", "mid_run": list(info.mid_run),
            "always_on": info.always_on, "summary": info.summary, "source": info.source,
            "params": [{"name": p.name, "type": p.type.__name__, "default": p.default,
                        "choices": list(p.choices), "min": p.min, "max": p.max, "help": p.help}
                       for p in info.params],
        })
    if args.json:
        print(json.dumps({"capabilities": caps, "techniques": rows}, indent=2))
        return EXIT_OK
    print(f"device {caps['device']}; applied in this order: {' -> '.join(registry.STAGES)}\n")
    for row in rows:
        mark = "yes" if row["available"] else "no "
        live = "live" if row["mid_run"] else "    "
        print(f"[{mark}] {row['name']:<26} {row['category']:<12} {live}  {row['summary']}")
        if row["reason"]:
            print(f"      why not: {row['reason']}")
        for p in row["params"]:
            extra = f" one of {', '.join(map(str, p['choices']))}" if p["choices"] else ""
            print(f"      {p['name']} = {p['default']!r} ({p['type']}{extra}) {p['help']}")
    return EXIT_OK
