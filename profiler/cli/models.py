"""`effiscope models`: the built-in presets, the models in the local Hugging Face cache and
the architectures that can be built with random weights."""

from __future__ import annotations

import argparse
import json

from profiler.cli.common import EXIT_OK


def add_parser(sub) -> None:
    p = sub.add_parser("models", help="list the built-in presets, the models in the local "
                       "Hugging Face cache and the architectures with random weights")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(func=cmd_models)


def cmd_models(args: argparse.Namespace) -> int:
    """Built-in presets, models in the local Hugging Face cache, and hf-config architectures."""
    from profiler.models.hf_arch import ARCHITECTURES
    from profiler.models.hf_cache import hub_cache_dir, list_cached_models
    from profiler.models.presets import GPT_PRESETS

    cached = list_cached_models()
    if args.json:
        print(json.dumps({
            "presets": [{"name": n, "description": s.description, **s.as_dict()}
                        for n, s in GPT_PRESETS.items()],
            "hf_cache": str(hub_cache_dir()), "cached": cached,
            "architectures": [{"name": a.name, "kind": a.kind, "summary": a.summary}
                              for a in ARCHITECTURES.values()]}, indent=2))
        return EXIT_OK
    print('Built-in GPT presets (model.source = "preset", model.preset = NAME):')
    for name, shape in GPT_PRESETS.items():
        print(f"  {name:<14} {shape.description}")
    print(f'\nHugging Face cache at {hub_cache_dir()} (model.source = "hf", model.path = ID):')
    for item in cached:
        mark = "yes" if item["usable"] else "no "
        size = f"{item['parameters']:,} parameters" if item["parameters"] else ""
        print(f"  [{mark}] {item['id']:<40} {item['kind'] or '?':<11} {item['model_type']:<10} "
              f"{item['weights']:<12} {size}")
        if item["reason"]:
            print(f"        why not: {item['reason']}")
    if not cached:
        print("  (none found; nothing is downloaded at run time: download models into this "
              "cache, or give a checkpoint folder as model.path)")
    print('\nArchitectures with random weights (model.source = "hf-config", [model.arch] '
          "name = NAME):")
    for arch in ARCHITECTURES.values():
        print(f"  {arch.name:<10} {arch.kind:<11} {arch.summary}")
    return EXIT_OK
