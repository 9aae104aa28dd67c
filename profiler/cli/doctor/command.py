"""`effiscope doctor`: does this set-up work, and how fast is it? One command, every path.

Each check (the checks*.py modules of profiler/cli/doctor/) ends as pass, fail (with the
error) or skip (with the reason, e.g. "no CUDA GPU"), with its figures. Results go to the
terminal and to a JSON and a Markdown file under the data directory ($EFFISCOPE_HOME or the
platform's, see profiler.store), or under --out; the files are rewritten after each check, so a
run stopped at a time limit keeps what it measured. The exit status is non-zero when a check
failed, and the failing checks are named. This module imports no torch until it runs, and
nothing here imports Qt.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

from profiler.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE

FORMAT_VERSION = 1


@dataclass
class Check:
    name: str
    title: str
    status: str
    """pass, fail or skip."""
    seconds: float = 0.0
    summary: str = ""
    error: str | None = None
    reason: str | None = None
    figures: dict = field(default_factory=dict)
    traceback: str | None = None
    would_check: str | None = None
    """In a rehearsal (--rehearse, on a CPU): what this GPU-only check proves on a GPU."""


def all_checks() -> list:
    """Every check in the order it runs (quick facts first, the long GPU runs last)."""
    from profiler.cli.doctor import (
        checks,
        checks_compression,
        checks_cuda,
        checks_distributed,
        checks_gpu,
        checks_memory,
        checks_techniques,
    )

    by_name = {spec.name: spec for module in (checks, checks_memory, checks_distributed,
                                              checks_gpu, checks_compression, checks_cuda,
                                              checks_techniques)
               for spec in module.CHECKS}
    order = ["versions", "nvml", "nvml_uuid", "train_fp32", "train_bf16", "train_fp16", "tf32",
             "adamw", "sdpa", "flash_generation", "compile", "cudagraph_accumulation",
             "activation_checkpointing", "memory_prediction", "segment_peak", "torchao",
             "sparse_2to4", "ddp", "fsdp", "fsdp_fp16", "roofline_ceiling", "step_sync",
             "gpt2_throughput", "energy_per_token", "energy_window", "energy_ranks"]
    return [by_name[n] for n in order if n in by_name] + [
        spec for name, spec in by_name.items() if name not in order]


def _json_safe(value):
    """Figures as JSON: non-finite floats become None (the error text says what they were)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if value is None or isinstance(value, bool | int | str):
        return value
    return str(value)


def proves(spec) -> str:
    """What a check proves, in its own words: its docstring's first paragraph (else its title)."""
    doc = (spec.run.__doc__ or "").strip().split("\n\n")[0]
    return " ".join(doc.split()) or spec.title


def run_one(spec, ctx, rehearse: bool = False) -> Check:
    import torch

    from profiler.cli.doctor.base import CheckFailed, Skip

    check = Check(spec.name, spec.title, "pass")
    if spec.cuda_only and not ctx.cuda:
        if rehearse:
            check.would_check = proves(spec)
            check.status, check.reason = "skip", f"rehearsal on a CPU; on a GPU: {check.would_check}"
            return check
        check.status, check.reason = "skip", ("no CUDA GPU" if not torch.cuda.is_available()
                                              else f"needs a CUDA device; --device is {ctx.device}")
        return check
    if spec.cpu_needs_full and not ctx.cuda and not ctx.full:
        check.status, check.reason = "skip", spec.cpu_needs_full
        return check
    started = time.perf_counter()
    try:
        figures = spec.run(ctx)
    except Skip as exc:
        check.status, check.reason, figures = "skip", str(exc), {}
    except CheckFailed as exc:
        check.status, check.error, figures = "fail", str(exc), exc.figures
    except Exception as exc:  # noqa: BLE001 - a check that breaks is a failed check, not a crash
        first = str(exc).strip().splitlines()[0][:500] if str(exc).strip() else ""
        check.status, check.error, figures = "fail", f"{type(exc).__name__}: {first}", {}
        check.traceback = "".join(traceback.format_exception(exc)[-12:])
    finally:
        _cleanup(ctx, torch)
    check.seconds = time.perf_counter() - started
    figures = dict(figures or {})
    check.summary = str(figures.pop("summary", ""))
    check.figures = _json_safe(figures)
    return check


def _cleanup(ctx, torch) -> None:
    """Leave no process group, flag or cached block behind for the next check."""
    import gc

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    gc.collect()
    if ctx.cuda:
        try:
            torch.cuda.synchronize(ctx.device)
            torch.cuda.empty_cache()
        except RuntimeError:
            pass  # a broken context is the failed check's story; the next check will say so


def line(check: Check) -> str:
    detail = check.summary if check.status == "pass" else (check.error or check.reason or "")
    took = f"{check.seconds:6.1f} s" if check.status != "skip" or check.seconds else " " * 8
    return f"  {check.status.upper():<4}  {check.name:<26} {took}  {detail}"


def markdown(report: dict) -> str:
    env = report["environment"]
    lines = [f"# effiscope doctor — {report['created']}", "",
             f"- device: {env['device']} ({env.get('device_name') or 'n/a'})",
             f"- torch {env['torch']}, CUDA {env['cuda'] or 'none'}, Python {env['python']}",
             f"- options: {', '.join(k for k, v in report['options'].items() if v) or 'default'}",
             f"- result: {report['result']['text']}", "",
             "| check | status | time (s) | result |", "| --- | --- | ---: | --- |"]
    for check in report["checks"]:
        text = check["summary"] if check["status"] == "pass" else (check["error"] or check["reason"])
        text = (text or "").replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {check['name']} | {check['status']} | {check['seconds']:.1f} | {text} |")
    lines += ["", "## Figures", ""]
    for check in report["checks"]:
        if check["figures"]:
            lines += [f"### {check['name']}: {check['title']}", "", "```json",
                      json.dumps(check["figures"], indent=1), "```", ""]
    return "\n".join(lines) + "\n"


def write_files(report: dict, out: str | None) -> tuple[Path, Path]:
    """The JSON and Markdown files, under --out or the data directory's doctor/ folder."""
    if out:
        folder = Path(out).expanduser()
    else:
        from profiler.store import data_home

        folder = data_home() / "doctor"
    from profiler import files

    fix = "choose another --out"  # written whole or not at all, never onto a FIFO or device
    files.output_folder(folder, fix)
    stem = f"doctor-{report['created'].replace(':', '').replace('-', '')}-{report['environment']['device_kind']}"
    json_path, md_path = folder / f"{stem}.json", folder / f"{stem}.md"
    files.write_text(json_path, json.dumps(report, indent=2) + "\n", fix)
    files.write_text(md_path, markdown(report), fix)
    return json_path, md_path


def add_parser(sub) -> None:
    """`doctor`; profiler.cli.doctor imports torch only when it runs."""
    p = sub.add_parser("doctor", help="self-check: every CPU / CUDA path of EffiScope, pass / "
                                      "fail / skip with figures (exit 1 when a check fails)",
                       description=__doc__.splitlines()[0])
    add_arguments(p)
    p.set_defaults(func=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true",
                        help="print the report as JSON on stdout (progress goes to stderr)")
    parser.add_argument("--only", metavar="NAME[,NAME]",
                        help="run only these checks (see --list)")
    parser.add_argument("--quick", action="store_true", help="fewer steps and repeats")
    parser.add_argument("--full", action="store_true",
                        help="also the checks that are slow on a CPU (torch.compile)")
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    parser.add_argument("--out", metavar="DIR",
                        help="write the JSON and Markdown here (default: the data directory's "
                             "doctor/ folder)")
    parser.add_argument("--list", action="store_true", help="list the checks and exit")
    parser.add_argument("--rehearse", action="store_true",
                        help="run the whole self-check on the CPU: the CPU checks run, each GPU-only "
                             "check says what it would prove on a GPU (for CI)")


def run(args: argparse.Namespace) -> int:
    specs = all_checks()
    if args.list:
        for spec in specs:
            where = "CUDA" if spec.cuda_only else "CPU + CUDA"
            print(f"  {spec.name:<26} {where:<11} {spec.title}")
        return EXIT_OK
    if args.only is not None:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        if not wanted:
            print(f"effiscope: doctor --only {args.only!r} names no check; give one or more "
                  f"names separated by commas (see --list): {', '.join(s.name for s in specs)}",
                  file=sys.stderr)
            return EXIT_USAGE
        unknown = [n for n in wanted if n not in {s.name for s in specs}]
        if unknown:
            print(f"effiscope: doctor --only: no check named {', '.join(unknown)}; the checks "
                  f"are {', '.join(s.name for s in specs)}", file=sys.stderr)
            return EXIT_USAGE
        specs = [s for s in specs if s.name in wanted]
    if args.out:  # a folder the report cannot be written into is refused before any check
        from profiler import files

        try:
            files.output_folder(Path(args.out).expanduser(), "choose another --out")
        except OSError as exc:
            print(f"effiscope: doctor --out: {exc}", file=sys.stderr)
            return EXIT_USAGE

    import torch

    from profiler.cli.doctor.base import Context
    from profiler.measure.capabilities import detect

    if args.rehearse:
        device = torch.device("cpu")
    elif args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            device = torch.device(args.device)
        except RuntimeError:
            print(f"effiscope: doctor --device {args.device!r} is not a device; use auto, cpu, "
                  "cuda or cuda:N", file=sys.stderr)
            return EXIT_USAGE
        if device.type == "cuda" and not torch.cuda.is_available():
            print("effiscope: doctor --device cuda but torch sees no CUDA GPU; use auto or cpu",
                  file=sys.stderr)
            return EXIT_USAGE
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    progress = sys.stderr if args.json else sys.stdout
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    created = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    print(f"effiscope doctor: {device}{f' ({name})' if name else ''}, torch {torch.__version__}, "
          f"{len(specs)} checks", file=progress, flush=True)
    started = time.perf_counter()
    checks: list[Check] = []
    environment = {"device": str(device), "device_kind": device.type, "device_name": name,
                   "torch": torch.__version__, "cuda": torch.version.cuda,
                   "python": sys.version.split()[0]}

    def build_report(finished: bool) -> dict:
        failed = [c.name for c in checks if c.status == "fail"]
        counts = {s: sum(c.status == s for c in checks) for s in ("pass", "fail", "skip")}
        text = (f"{counts['pass']} passed, {counts['skip']} skipped, {counts['fail']} failed"
                + (f" ({', '.join(failed)})" if failed else "")
                + f" in {time.perf_counter() - started:.0f} s"
                + ("" if finished else f"; still running ({len(checks)} of {len(specs)} done)"))
        return {
            "doctor": FORMAT_VERSION, "created": created, "finished": finished,
            "environment": environment,
            "options": {"quick": args.quick, "full": args.full, "only": args.only,
                        "rehearse": args.rehearse},
            "result": {"exit_code": EXIT_FAILED if failed else EXIT_OK, "failed": failed,
                       **counts, "text": text},
            "warnings": sorted(set(ctx.warnings)),
            "checks": [asdict(c) for c in checks],
        }

    def write(finished: bool) -> tuple[Path | None, Path | None]:
        try:
            return write_files(build_report(finished), args.out)
        except OSError as exc:
            print(f"effiscope: doctor: cannot write the report ({exc}); set EFFISCOPE_HOME or "
                  "--out to a writable folder", file=sys.stderr)
            return None, None

    with tempfile.TemporaryDirectory(prefix="effiscope-doctor-") as workdir:
        ctx = Context(device=device, quick=args.quick, full=args.full, workdir=Path(workdir),
                      caps=detect(device))
        for spec in specs:
            check = run_one(spec, ctx, rehearse=args.rehearse)
            checks.append(check)
            print(line(check), file=progress, flush=True)
            if check.status != "skip" and spec is not specs[-1]:
                write(False)  # a run stopped at a time limit still leaves what it measured
    report = build_report(True)
    json_path, md_path = write(True)
    text, failed = report["result"]["text"], report["result"]["failed"]
    print(f"doctor: {text}", file=progress)
    if json_path:
        print(f"doctor: wrote {json_path} and {md_path.name}", file=progress)
    if failed:
        print(f"doctor: FAILED: {', '.join(failed)}", file=sys.stderr)
    if args.json:
        print(json.dumps(report, indent=2))
    if json_path is None:
        return EXIT_FAILED
    return report["result"]["exit_code"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="effiscope doctor", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
