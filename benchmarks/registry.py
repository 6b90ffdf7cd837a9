"""Registry benchmarks: load, `get`, file-save-to-visible and apply, each beside a peer that sets its floor.

Builds a temporary app of `entries` config entries spread over `files`
`registry/**/_index.yaml` files and measures, in one run:

- load: booting `App(root=...)` (entering it: load, record, start the watcher and wait
  until it watches) on a fresh copy of the app (the first boot records every entry as
  version 1 in `.wippy/state.duckdb`), booting it again with the files unchanged, `AppFolder(root, files_only=True)` (parse and validate, in-memory DuckDB), and
  the floor: reading every file and `yaml.load` with `CSafeLoader`;
- get: `registry.get` on every id, beside `dict.__getitem__` on the same ids;
- save-to-visible: rewriting one `_index.yaml` in place (one value changed) inside a
  running node until `registry.get(id).data["value"]` shows it, beside the raw
  `watchfiles.awatch` notice of the same kind of write (same folder, step and debounce
  as the node's watcher); both are seen through the same polling loop;
- apply: `registry.apply([one entry])`, written through to its file and committed in
  DuckDB.

Prints ONE JSON object. Every latency block (`load.*`, `save_to_visible.*`,
`apply.latency`, `get.registry_run`, `get.dict_run`) has the same shape, from one helper:
`{"n", "p50_ms", "p95_ms", "min_ms", "max_ms", "mean_ms"}`. Keys:

    mode, python, machine, sizes{entries, files, load_repeats, get_calls, get_repeats,
        save_samples, apply_samples, watch_step_ms, watch_debounce_ms, poll_interval_ms}
    load{yaml_floor, files_only, first_boot, second_boot, first_boot_vs_floor, second_boot_vs_floor}
    get{calls, registry_per_s, dict_per_s, ratio_vs_dict, registry_run, dict_run}
    save_to_visible{registry, watchfiles, overhead_p50_ms, overhead_p95_ms, timeouts}
    apply{latency, first_version, last_version}
    targets{<name>: {target, actual, met}}, all_met

Rates are the best of `get_repeats` interleaved runs; the save and apply samples
follow one warm-up each, and the load repeats a warm-up on a tiny app. A save that
is never seen counts in `timeouts` and as a `VISIBLE_TIMEOUT_S` sample.

    python benchmarks/registry.py          # full run: 10,000 entries in 500 files, under a minute
    python benchmarks/registry.py --quick  # smoke test: 1,000 entries in 50 files, a few seconds
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import itertools
import json
import platform
import random
import shutil
import sys
import tempfile
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter
from typing import Any

import watchfiles
import yaml
from _timing import Timings, machine

from wippy_agents import App
from wippy_agents.app import AppFolder
from wippy_agents.registry import Entry

WATCH_STEP_MS = 5
WATCH_DEBOUNCE_MS = 200  # what the node's watcher passes to watchfiles.awatch
POLL_S = 0.001  # the polling loop both save-to-visible contenders are seen through
GAP_S = 0.02  # quiet time between save samples, so each write is its own watcher batch
VISIBLE_TIMEOUT_S = 5.0

TARGETS: dict[str, tuple[str, float]] = {
    "load_first_boot_p50_ms": ("<", 2000.0),
    "load_second_boot_p50_ms": ("<", 2000.0),
    "get_per_s": (">=", 1_000_000.0),
    "save_to_visible_p50_ms": ("<=", 50.0),
    "apply_p50_ms": ("<=", 5.0),
}


@dataclass(frozen=True)
class Sizes:
    """How big the app is and how many samples each measurement takes."""

    entries: int
    files: int
    load_repeats: int
    get_calls: int
    get_repeats: int
    save_samples: int
    apply_samples: int


FULL = Sizes(entries=10_000, files=500, load_repeats=3, get_calls=1_000_000, get_repeats=5, save_samples=40,
             apply_samples=200)
QUICK = Sizes(entries=1_000, files=50, load_repeats=1, get_calls=200_000, get_repeats=2, save_samples=10,
              apply_samples=10)
WARM_UP = Sizes(entries=20, files=2, load_repeats=1, get_calls=0, get_repeats=0, save_samples=0, apply_samples=0)


# -- the app --------------------------------------------------------------------------


@dataclass
class BenchApp:
    """A generated app folder: file `k` is `registry/g<k // 50>/f<k>/_index.yaml`, namespace `app.f<k>`."""

    root: Path
    sizes: Sizes
    values: dict[str, int] = field(default_factory=dict)
    _fresh: Iterator[int] = field(default_factory=lambda: itertools.count(10_000_000))

    def fresh_value(self) -> int:
        """A value no entry of this app has had yet."""
        return next(self._fresh)

    def file(self, k: int) -> Path:
        return self.root / "registry" / f"g{k // 50}" / f"f{k}" / "_index.yaml"

    def names(self, k: int) -> list[str]:
        """The entry names of file `k`: the entries are dealt round-robin over the files."""
        return [f"e{i}" for i in range(k, self.sizes.entries, self.sizes.files)]

    def ids(self) -> list[str]:
        return [f"app.f{k}:{name}" for k in range(self.sizes.files) for name in self.names(k)]

    def write(self, k: int) -> None:
        """Write file `k` in place, with the values in `self.values` (default: the entry's number)."""
        lines = [f"namespace: app.f{k}", "entries:"]
        for name in self.names(k):
            value = self.values.get(f"app.f{k}:{name}", int(name[1:]))
            lines += [f"  - name: {name}", "    kind: config", f"    value: {value}"]
        path = self.file(k)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def create(self) -> None:
        self.root.mkdir(parents=True)
        (self.root / "wippy.yaml").write_text(f"name: bench\nwatch_step_ms: {WATCH_STEP_MS}\n", encoding="utf-8")
        for k in range(self.sizes.files):
            self.write(k)

    def copy(self, root: Path) -> BenchApp:
        """A fresh copy (no state file) at `root`."""
        shutil.copytree(self.root, root, ignore=shutil.ignore_patterns(".wippy"))
        return BenchApp(root, self.sizes, dict(self.values), self._fresh)


# -- load -------------------------------------------------------------------------------


def yaml_floor(app: BenchApp) -> float:
    """Read and `yaml.load` every file with CSafeLoader: the least any loader can do."""
    start = perf_counter()
    count = 0
    for path in sorted((app.root / "registry").rglob("_index.yaml")):
        doc = yaml.load(path.read_bytes(), Loader=yaml.CSafeLoader)
        count += len(doc["entries"])
    elapsed = perf_counter() - start
    assert count == app.sizes.entries, count
    return elapsed


def files_only(app: BenchApp) -> float:
    start = perf_counter()
    loaded = AppFolder(app.root, files_only=True)
    elapsed = perf_counter() - start
    try:
        assert len(loaded.registry) == app.sizes.entries, len(loaded.registry)
    finally:
        loaded.close()
    return elapsed


async def boot(app: BenchApp) -> float:
    """Seconds to enter `App(root=...)`: load the registry, record what changed, start the watcher."""
    wippy = App(root=app.root)
    start = perf_counter()
    await wippy.__aenter__()
    elapsed = perf_counter() - start
    try:
        assert len(wippy.registry) == app.sizes.entries, len(wippy.registry)
    finally:
        await wippy.__aexit__(None, None, None)
    return elapsed


async def load_once(app: BenchApp, floor: Timings, only: Timings, first: Timings, second: Timings) -> None:
    """One round of every load contender on `app`, a fresh copy it leaves booted twice."""
    gc.collect()
    floor.add(yaml_floor(app))
    only.add(files_only(app))
    first.add(await boot(app))
    assert (app.root / ".wippy" / "state.duckdb").exists()
    second.add(await boot(app))


async def measure_load(template: BenchApp, work: Path) -> dict[str, Any]:
    # warm-up on a tiny app: imports, first DuckDB connection, pydantic's first validations
    tiny = BenchApp(work / "warm-up", WARM_UP)
    tiny.create()
    await load_once(tiny, Timings(), Timings(), Timings(), Timings())
    floor, only, first, second = Timings(), Timings(), Timings(), Timings()
    for repeat in range(template.sizes.load_repeats):
        app = template.copy(work / f"load{repeat}")
        await load_once(app, floor, only, first, second)
        shutil.rmtree(app.root)
    return {
        "yaml_floor": floor.summary(),
        "files_only": only.summary(),
        "first_boot": first.summary(),
        "second_boot": second.summary(),
        "first_boot_vs_floor": round(first.ms(0.5) / floor.ms(0.5), 1),
        "second_boot_vs_floor": round(second.ms(0.5) / floor.ms(0.5), 1),
    }


# -- get ----------------------------------------------------------------------------------


def lookups(fn: Callable[[str], Any], ids: list[str]) -> float:
    """Seconds to call `fn` on every id (C-level iteration, so the loop costs next to nothing)."""
    start = perf_counter()
    deque(map(fn, ids), maxlen=0)
    return perf_counter() - start


def measure_get(wippy: App, app: BenchApp) -> dict[str, Any]:
    registry = wippy.registry
    ids = app.ids()
    plain = {entry_id: registry.get(entry_id) for entry_id in ids}
    random.Random(0).shuffle(ids)
    calls = (ids * (app.sizes.get_calls // len(ids) + 1))[: app.sizes.get_calls]
    contenders: dict[str, Callable[[str], Any]] = {"registry": registry.get, "dict": plain.__getitem__}
    runs = {key: Timings() for key in contenders}
    for _ in range(app.sizes.get_repeats):
        for key, fn in contenders.items():
            gc.collect()
            runs[key].add(lookups(fn, calls))
    rates = {key: len(calls) / min(runs[key].samples) for key in contenders}
    return {
        "calls": len(calls),
        "registry_per_s": round(rates["registry"]),
        "dict_per_s": round(rates["dict"]),
        "ratio_vs_dict": round(rates["registry"] / rates["dict"], 3),
        "registry_run": runs["registry"].summary(),
        "dict_run": runs["dict"].summary(),
    }


# -- save-to-visible ------------------------------------------------------------------------


async def poll(seen: Callable[[], bool]) -> bool:
    """Wait, checking every POLL_S, until `seen()`; False after VISIBLE_TIMEOUT_S."""
    deadline = perf_counter() + VISIBLE_TIMEOUT_S
    while not seen():
        if perf_counter() > deadline:
            return False
        await asyncio.sleep(POLL_S)
    return True


async def save_samples(app: BenchApp, n: int, visible: Callable[[int, str, int], bool]) -> tuple[Timings, int]:
    """Rewrite files round-robin with a new value for their first entry; time until `visible(k, id, value)`."""
    timings, timeouts = Timings(), 0
    for sample in range(n + 1):  # sample 0 warms up
        k = sample % app.sizes.files
        entry_id = f"app.f{k}:{app.names(k)[0]}"
        value = app.fresh_value()
        app.values[entry_id] = value
        start = perf_counter()
        app.write(k)
        ok = await poll(functools.partial(visible, k, entry_id, value))
        if sample:
            timings.add(perf_counter() - start)
            timeouts += not ok
        await asyncio.sleep(GAP_S)
    return timings, timeouts


async def raw_watchfiles(app: BenchApp, n: int) -> tuple[Timings, int]:
    """The same writes seen by a bare `watchfiles.awatch` on the registry folder."""
    noticed: set[str] = set()
    stop = asyncio.Event()
    ready = asyncio.Event()

    async def watch() -> None:
        ready.set()
        async for changes in watchfiles.awatch(
            app.root / "registry", watch_filter=None, step=WATCH_STEP_MS, debounce=WATCH_DEBOUNCE_MS,
            stop_event=stop, ignore_permission_denied=True,
        ):
            noticed.update(str(Path(path).resolve()) for _, path in changes)

    def visible(k: int, entry_id: str, value: int) -> bool:
        path = str(app.file(k).resolve())
        if path in noticed:
            noticed.clear()
            return True
        return False

    task = asyncio.create_task(watch())
    await ready.wait()
    await asyncio.sleep(0.2)  # the watcher thread is watching
    try:
        return await save_samples(app, n, visible)
    finally:
        stop.set()
        await task


async def measure_save(wippy: App, app: BenchApp, raw: tuple[Timings, int]) -> dict[str, Any]:
    registry = wippy.registry
    assert wippy     is not None and wippy    .config.watch_step_ms == WATCH_STEP_MS

    def visible(k: int, entry_id: str, value: int) -> bool:
        return bool(registry.get(entry_id).data["value"] == value)

    await asyncio.sleep(0.2)  # the watcher thread is watching
    timings, timeouts = await save_samples(app, app.sizes.save_samples, visible)
    raw_timings, raw_timeouts = raw
    return {
        "registry": timings.summary(),
        "watchfiles": raw_timings.summary(),
        "overhead_p50_ms": round(timings.ms(0.5) - raw_timings.ms(0.5), 3),
        "overhead_p95_ms": round(timings.ms(0.95) - raw_timings.ms(0.95), 3),
        "timeouts": {"registry": timeouts, "watchfiles": raw_timeouts},
    }


# -- apply --------------------------------------------------------------------------------------


async def measure_apply(wippy: App, n: int) -> dict[str, Any]:
    """One config entry applied n times with a new value (after a warm-up that creates it)."""
    registry = wippy.registry
    timings = Timings()
    first = last = 0
    for sample in range(n + 1):
        entry = Entry("app.bench:e1", "config", {}, {"value": sample})
        with timings.time():
            version = registry.apply([entry], author="bench", reason="bench")
        first = first or version
        last = version
        await asyncio.sleep(0)  # let the watcher see the written file between samples, as in a live node
    timings.samples.pop(0)
    assert registry.get("app.bench:e1").data["value"] == n
    return {"latency": timings.summary(), "first_version": first, "last_version": last}


# -- putting it together ----------------------------------------------------------------------------


def verdict(actual: dict[str, float]) -> dict[str, dict[str, Any]]:
    out = {}
    for name, (op, target) in TARGETS.items():
        value = actual[name]
        met = {"<": value < target, "<=": value <= target, ">=": value >= target}[op]
        out[name] = {"target": f"{op} {target:g}", "actual": value, "met": met}
    return out


async def run(sizes: Sizes, work: Path) -> dict[str, Any]:
    """Every measurement, as the JSON-ready report."""
    template = BenchApp(work / "template", sizes)
    template.create()
    load = await measure_load(template, work)

    app = template.copy(work / "live")
    raw = await raw_watchfiles(app, sizes.save_samples)
    async with App(root=app.root) as wippy:
        get = measure_get(wippy, app)
        save = await measure_save(wippy, app, raw)
        apply = await measure_apply(wippy, sizes.apply_samples)

    actual = {
        "load_first_boot_p50_ms": load["first_boot"]["p50_ms"],
        "load_second_boot_p50_ms": load["second_boot"]["p50_ms"],
        "get_per_s": get["registry_per_s"],
        "save_to_visible_p50_ms": save["registry"]["p50_ms"],
        "apply_p50_ms": apply["latency"]["p50_ms"],
    }
    targets = verdict(actual)
    return {
        "mode": "quick" if sizes is QUICK else "full",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "machine": machine(),
        "sizes": {
            "entries": sizes.entries,
            "files": sizes.files,
            "load_repeats": sizes.load_repeats,
            "get_calls": sizes.get_calls,
            "get_repeats": sizes.get_repeats,
            "save_samples": sizes.save_samples,
            "apply_samples": sizes.apply_samples,
            "watch_step_ms": WATCH_STEP_MS,
            "watch_debounce_ms": WATCH_DEBOUNCE_MS,
            "poll_interval_ms": POLL_S * 1000,
        },
        "load": load,
        "get": get,
        "save_to_visible": save,
        "apply": apply,
        "targets": targets,
        "all_met": all(t["met"] for t in targets.values()),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a small smoke run (a few seconds)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="wippy-registry-bench-") as work:
        report = asyncio.run(run(QUICK if args.quick else FULL, Path(work)))
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
