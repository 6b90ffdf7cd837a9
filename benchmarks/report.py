"""`make bench`: run every benchmark in turn, then write `bench-report.md` and its plots (`docs/bench/*.png`).

Each benchmark prints one JSON object: its sections (our figures next to the peers'
measured in the same run, and the ratios), `targets` (`{name: {target, op, actual,
met}}`) and, where it measures how cost grows with work, `series`: `{name: {"title",
"x", "y", "lines": {label: [[x, y], ...]}, "log": bool}}` (or `"bars": {label: y}`),
one plot each. The figures of the last `make soak` (docs/bench/soak.json, which the
stress suites write) are the `soak` area, with the crash storm's p99 plotted. The report
puts a table per benchmark and every plot in one page a user reads at a glance; the
raw figures go next to the plots (`docs/bench/results.json`), so `--from` redraws the
report without measuring again.

    python benchmarks/report.py [--quick] [--only actors,durable] [--from docs/bench/results.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BENCHMARKS = ("actors", "registry", "llm", "agents", "durable", "sandbox", "tui", "mcp", "cluster")
PLOTS = Path("docs/bench")
REPORT = Path("bench-report.md")
RUN_TIMEOUT = 3600.0
"""One benchmark's run at most; one that takes longer is reported as failed and the others still run."""


def measure(names: tuple[str, ...], quick: bool) -> dict[str, Any]:
    """Run each benchmark as its own process (one at a time: they measure the machine) and collect its JSON."""
    results: dict[str, Any] = {}
    for name in names:
        started = time.monotonic()
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        command = [sys.executable, str(REPO / "benchmarks" / f"{name}.py"), *(["--quick"] if quick else [])]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=RUN_TIMEOUT, cwd=REPO)
        except subprocess.TimeoutExpired:
            results[name] = {"failed": f"did not finish within {RUN_TIMEOUT:g} s"}
            continue
        if done.returncode != 0:
            results[name] = {"failed": f"exit code {done.returncode}: {done.stderr.strip()[-2000:]}"}
            continue
        try:
            results[name] = json.loads(done.stdout)
        except json.JSONDecodeError as error:
            results[name] = {"failed": f"its output is not JSON ({error}): {done.stdout[:500]}"}
            continue
        print(f"bench: {name} done in {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    return {"measured": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "quick": quick, "results": results}


def soak_area(figures: dict[str, Any]) -> dict[str, Any]:
    """The stress suites' figures from the last `make soak` as an area of the report."""
    area: dict[str, Any] = {**figures, "targets": {}, "series": {}}
    storm = figures.get("crash_storm")
    if storm:
        area["series"]["crash_storm"] = {"title": "healthy turns' p99 latency, calm and in a crash storm", "x": "",
                                         "y": "ms", "bars": {"calm": storm["calm_p99_ms"],
                                                             "crash storm": storm["storm_p99_ms"]}}
    return area


def plot(run: dict[str, Any], folder: Path) -> dict[str, list[Path]]:
    """One PNG per series of each benchmark, by benchmark; the paths are relative to the repository."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display, no window
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    drawn: dict[str, list[Path]] = {}
    for name, result in run["results"].items():
        for key, series in (result.get("series") or {}).items():
            figure, axes = plt.subplots(figsize=(6.4, 3.6), dpi=100)
            if "bars" in series:
                axes.bar(list(series["bars"]), list(series["bars"].values()))
            for label, points in series.get("lines", {}).items():
                if points:
                    xs, ys = zip(*points, strict=True)
                    axes.plot(xs, ys, marker="o", label=label)
            if series.get("log"):
                axes.set_xscale("log")
            axes.set_title(series.get("title", key))
            axes.set_xlabel(series.get("x", ""))
            axes.set_ylabel(series.get("y", ""))
            axes.grid(True, alpha=0.3)
            if series.get("lines"):
                axes.legend()
            figure.tight_layout()
            path = folder / f"{name}-{key}.png"
            figure.savefig(path, metadata={"Software": None})  # no version stamp: a redraw of the same figures is the same file
            plt.close(figure)
            drawn.setdefault(name, []).append(path)
    return drawn


def render(run: dict[str, Any], plots: dict[str, list[Path]]) -> str:
    """The report: a summary, then per benchmark its targets, its figures beside the peers', and its plots."""
    results = run["results"]
    machine = next((r["machine"] for r in results.values() if isinstance(r.get("machine"), dict)), {})
    lines = ["# Benchmark report", "",
             f"Measured {run['measured']} on {machine.get('cores', '?')} cores ({machine.get('platform', '?')})"
             + (", quick mode (a smoke run, not a measurement)" if run["quick"] else "")
             + " by `make bench`. Every figure here was measured in that run; each peer was measured in the same "
               "run as the figure it is compared with, and ratios are ours over theirs.", "",
             "## Summary", "", "| area | targets met | not met |", "|---|---|---|"]
    for name, result in results.items():
        if "failed" in result:
            lines.append(f"| [{name}](#{name}) | the benchmark failed | |")
            continue
        targets = result.get("targets", {})
        if not targets:
            lines.append(f"| [{name}](#{name}) | figures only (no targets) | |")
            continue
        missed = [key for key, target in targets.items() if not target.get("met")]
        lines.append(f"| [{name}](#{name}) | {len(targets) - len(missed)} of {len(targets)} | "
                     f"{', '.join(missed) or '-'} |")
    for name, result in results.items():
        lines += ["", f"## {name}", ""]
        if "failed" in result:
            lines += ["The benchmark failed:", "", "```", result["failed"], "```"]
            continue
        targets = result.get("targets", {})
        if targets:
            lines += ["| target | measured | wanted | met |", "|---|---|---|---|"]
            lines += [f"| {key} | {_figure(t.get('actual'))} | {t.get('op', '')} {_figure(t.get('target'))} | "
                      f"{'yes' if t.get('met') else '**no**'} |" for key, t in targets.items()]
        figures = [(section, key, value) for section, values in result.items()
                   if isinstance(values, dict) and section not in _NOT_FIGURES
                   for key, value in _flat(values)]
        if figures:
            lines += ["", "| section | figure | value |", "|---|---|---|"]
            lines += [f"| {section} | {key} | {_figure(value)} |" for section, key, value in figures]
        for path in plots.get(name, []):
            lines += ["", f"![{path.stem}]({path.as_posix()})"]
    return "\n".join(lines) + "\n"


_NOT_FIGURES = {"targets", "machine", "series", "versions", "sizes", "reference"}


def _flat(values: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """A section's numbers (and short texts) with dotted names, nested sections flattened."""
    found: list[tuple[str, Any]] = []
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            found += _flat(value, name + ".")
        elif isinstance(value, bool | int | float) or (isinstance(value, str) and len(value) < 60):
            found.append((name, value))
    return found


def _figure(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return f"{value:,.3f}".rstrip("0").rstrip(".") if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="each benchmark's smoke run (seconds, not figures)")
    parser.add_argument("--only", help=f"comma-separated benchmarks (default: all of {', '.join(BENCHMARKS)})")
    parser.add_argument("--from", dest="source", type=Path, help="redraw from a results.json instead of measuring")
    parser.add_argument("--out", type=Path, default=REPO, help="where bench-report.md and docs/bench/ go")
    args = parser.parse_args(argv)
    if args.source is not None:
        run = json.loads(args.source.read_text())
    else:
        names = tuple(n.strip() for n in args.only.split(",")) if args.only else BENCHMARKS
        unknown = set(names) - set(BENCHMARKS)
        if unknown:
            parser.error(f"no benchmark {', '.join(sorted(unknown))}; they are {', '.join(BENCHMARKS)}")
        run = measure(names, args.quick)
        soak = args.out / PLOTS / "soak.json"
        if soak.exists():
            run["results"]["soak"] = soak_area(json.loads(soak.read_text()))
    folder = args.out / PLOTS
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(run, indent=2) + "\n")
    plots = {name: [path.relative_to(args.out) for path in paths] for name, paths in plot(run, folder).items()}
    (args.out / REPORT).write_text(render(run, plots))
    print(f"wrote {args.out / REPORT} and {sum(map(len, plots.values()))} plot(s) in {folder}", file=sys.stderr)


if __name__ == "__main__":
    main()
