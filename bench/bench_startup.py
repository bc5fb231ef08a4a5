"""Start-up, install size and the whole-process cost of a small `vdna add` (issues 18 and 19).

    python bench/bench_startup.py                       # this interpreter (the full install)
    python bench/bench_startup.py --light-venv DIR      # also a base-install venv (no torch); made if missing

1. Start-up: median wall time of `vdna --help`, `vdna extractors`, `vdna list` (a 3-entry registry)
   as whole processes, and of `python -c "import torch"` for scale.
2. Size: site-packages of the base-install venv (pip and setuptools left out) and of this one.
3. `vdna add` of N real sample images (default 100), one whole process, decoding in the process
   (--workers 0) so every second is accounted for: the command is run by a wrapper that times the
   decode (pipeline._prepare), the forward passes (Extractor.__call__), the counting (the
   accumulators' update), network loading (load_extractor) and the write (Catalog.put);
   overhead = wall - decode - forward, the target of issue 19 being <= 3 s. Time to first image:
   process start to the end of the first forward pass.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

WRAPPER = r"""
import json, sys, time
T0 = float(sys.argv[1])
out_path = sys.argv[2]
sys.argv = ["vdna"] + sys.argv[3:]
t = {"decode": 0.0, "forward": 0.0, "count": 0.0, "load_extractor": 0.0, "put": 0.0, "first_image": None,
     "import_cli": 0.0}
def timed(key, fn, first=False):
    def wrapper(*a, **k):
        s = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            e = time.perf_counter()
            t[key] += e - s
            if first and t["first_image"] is None:
                t["first_image"] = time.time() - T0
    return wrapper
s = time.perf_counter()
import vdnacli.cli.app as app
t["import_cli"] = time.perf_counter() - s
import vdnacli.pipeline as pipeline, vdnacli.extractors as ex, vdnacli.catalog as catalog
from vdnacli.extractors.loaded import Extractor
t["import_pipeline"] = time.perf_counter() - s
s = time.perf_counter()
import torch  # what add imports first thing anyway (lazily): timed on its own
t["import_torch"] = time.perf_counter() - s
pipeline._prepare = timed("decode", pipeline._prepare)
Extractor.__call__ = timed("forward", Extractor.__call__, first=True)
for cls in (pipeline.HistAccumulator, pipeline._GaussAccumulator, pipeline._LayerGaussAccumulator):
    cls.update = timed("count", cls.update)
ex.load_extractor = timed("load_extractor", ex.load_extractor)
catalog.Catalog.put = timed("put", catalog.Catalog.put)
try:
    app.main()
except SystemExit as e:
    t["code"] = e.code
t["wall"] = time.time() - T0
json.dump(t, open(out_path, "w"))
"""


def wall(cmd: list[str], env: dict, repeat: int) -> str:
    """Median wall time, and in brackets the median CPU time (user + sys) of the process, which
    a busy machine inflates less."""
    import resource

    times, cpus = [], []
    for _ in range(repeat):
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        s = time.perf_counter()
        p = subprocess.run(cmd, env=env, capture_output=True, text=True)
        times.append(time.perf_counter() - s)
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime)
        if p.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed: {p.stderr.strip()[-500:]}")
    return f"{statistics.median(times):.2f} ({statistics.median(cpus):.2f})"


def du(path: Path, skip=("pip", "setuptools", "_distutils_hack")) -> int:
    total = 0
    for child in path.iterdir():
        if child.name.split("-")[0] in skip or child.name in skip:
            continue
        if child.is_file():
            total += child.stat().st_size
        else:
            total += sum(f.stat().st_size for f in child.rglob("*") if f.is_file() and not f.is_symlink())
    return total


def site_packages(prefix: Path) -> Path:
    return next(prefix.glob("lib/python3*/site-packages"))


def make_light(venv: Path) -> None:
    print(f"making the base-install venv {venv} ...", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    src = Path(tempfile.mkdtemp()) / "src"
    src.mkdir()
    for f in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / f, src / f)
    for d in ("vdnacli", "registry"):
        shutil.copytree(ROOT / d, src / d, ignore=shutil.ignore_patterns("__pycache__"))
    s = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q", str(src)],
                   check=True)
    print(f"installed in {time.perf_counter() - s:.1f} s", file=sys.stderr)
    shutil.rmtree(src.parent)


def registry_with_entries(root: Path) -> None:
    """Three small DNAs (synthetic counts, the real extractor's layers) for `vdna list`."""
    sys.path.insert(0, str(ROOT / "tests"))
    from test_hub import synthetic  # noqa: E402

    from vdnacli.catalog import Catalog

    cat = Catalog(root)
    for i, n in enumerate(("a", "b", "c")):
        cat.put(n, synthetic(i))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--light-venv", type=Path, help="a base-install venv (made here if missing)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--skip-add", action="store_true")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="vdna-bench-startup-"))
    env = dict(os.environ, NO_COLOR="1", VDNA_REGISTRY=str(tmp / "registry"), HF_HUB_OFFLINE="1",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    registry_with_entries(tmp / "registry")
    pythons = {"full": sys.executable}
    if args.light_venv:
        if not (args.light_venv / "bin" / "python").exists():
            make_light(args.light_venv)
        pythons["base"] = str(args.light_venv / "bin" / "python")

    print(f"machine: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; median of {args.repeat} runs")
    print("\n| command | " + " | ".join(f"{k} install: wall (cpu) s" for k in pythons) + " |")
    print("|---|" + "---|" * len(pythons))
    for cmd in (["--help"], ["extractors"], ["list"]):
        row = []
        for kind, py in pythons.items():
            e = env if kind == "full" else {k: v for k, v in env.items() if k != "PYTHONPATH"}  # its own copy
            row.append(wall([py, '-m', 'vdnacli', *cmd], e, args.repeat))
        print(f"| vdna {' '.join(cmd)} | " + " | ".join(row) + " |")
    print(f"| python -c 'import torch' | {wall([sys.executable, '-c', 'import torch'], env, args.repeat)} |"
          + " — |" * (len(pythons) - 1))

    print("\n| install | site-packages (MB, without pip/setuptools) |")
    print("|---|---|")
    for kind, py in pythons.items():
        prefix = Path(subprocess.run([py, "-c", "import sys; print(sys.prefix)"], capture_output=True,
                                     text=True).stdout.strip())
        print(f"| {kind} | {du(site_packages(prefix)) / 1e6:.0f} |")

    if not args.skip_add:
        from vdnacli import samples

        sets = samples.write_demo_sets(tmp / "samples", per_half=(args.images + 5) // 6)
        folder = tmp / "images"
        folder.mkdir()
        files = sorted(f for d in sets.values() for f in d.iterdir())[: args.images]
        for i, f in enumerate(files):
            shutil.copy2(f, folder / f"{i:04d}{f.suffix}")
        report = tmp / "add.json"
        import resource

        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.time()
        subprocess.run([sys.executable, "-c", WRAPPER, repr(t0), str(report), "add", "bench", str(folder),
                        "--workers", "0", "--json"], env=env, check=True, capture_output=True)
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = json.loads(report.read_text())
        t["cpu"] = r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime
        over = t["wall"] - t["decode"] - t["forward"]
        print(f"\n`vdna add` of {len(files)} images (efficientnet-lite0, CPU, --workers 0), one process:\n")
        print("| part | s |\n|---|---|")
        for key, label in (("wall", "whole process"), ("cpu", "whole process, CPU time (user + sys, all threads)"), ("first_image", "time to first image (end of 1st forward)"),
                           ("import_cli", "import vdnacli.cli.app"), ("import_pipeline", "+ pipeline, extractors"),
                           ("import_torch", "import torch"),
                           ("load_extractor", "load_extractor (weights, build)"), ("decode", "decode + resize"),
                           ("forward", "forward passes"), ("count", "counting (hist, gauss)"), ("put", "write (Catalog.put)")):
            print(f"| {label} | {t[key]:.2f} |")
        parts = sum(t[k] for k in ("import_pipeline", "import_torch", "load_extractor", "decode", "forward", "count", "put"))
        print(f"| other (interpreter start, arguments, listing, shards, thumbnails) | {t['wall'] - parts:.2f} |")
        print(f"| **overhead = whole - decode - forward** | **{over:.2f}** (target <= 3) |")
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
