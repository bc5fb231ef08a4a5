"""Time `push`, `pull`, an offline pull and an unchanged re-pull against the loopback fake Hub.

The DNA has EfficientNet-Lite0's layers (2,064 neurons, 1000 bins) with counts shaped like a
real one (every neuron counts 49 positions x 40 images), histograms + Gaussians, so its entry
file has the size of a real DNA's. Each step is timed `--repeats` times (median), in-process,
through the library (vdnacli.hub), as the CLI calls it.

`--code DIR` times another checkout's vdnacli (e.g. the main branch) against the same fake Hub,
for a side-by-side comparison in one session.

Run:  python bench/hub_roundtrip.py [--repeats 5] [--code /work/main]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "tests"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from hub_server import FakeHub  # noqa: E402

TOKEN = "hf_bench_write_token"


def lite0_like(seed: int):
    from vdnacli.dna import DNA, Gaussian, images_digest, new_meta
    from vdnacli.extractors import get_spec

    spec = get_spec("efficientnet-lite0")
    rng = np.random.default_rng(seed)
    meta = new_meta(extractor=spec.name, weights_sha256=spec.weights.sha256, ranges_sha256="c" * 64,
                    layers=dict(spec.layers), bins=1000, preprocessing=spec.preprocessing(), kinds=("hist", "gauss"))
    hashes = np.unique(rng.integers(0, 256, size=(40, 16), dtype=np.uint8), axis=0)
    meta["num_images"], meta["images_sha256"] = len(hashes), images_digest(hashes)
    hist, gauss = {}, {}
    for l, n in spec.layers:
        centre = rng.uniform(200, 800, n)
        p = np.exp(-0.5 * ((np.arange(1000)[None, :] - centre[:, None]) / 60.0) ** 2)
        hist[l] = np.stack([rng.multinomial(49 * len(hashes), row / row.sum()) for row in p]).astype(np.int64)
        x = rng.normal(size=(len(hashes), n))
        gauss[l] = Gaussian(len(hashes), x.sum(0), (x * x).sum(0))
    return DNA(meta=meta, hist=hist, gauss=gauss, image_hashes=hashes)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--code", type=Path, default=None, help="Time the vdnacli of this checkout instead.")
    args = ap.parse_args(argv)
    if args.code:
        sys.path.insert(0, str(args.code.resolve()))
    work = Path(tempfile.mkdtemp(prefix="vdna-hub-bench-"))
    hub = FakeHub(tokens={TOKEN: {"read", "write"}}).start()
    os.environ.update(HF_ENDPOINT=hub.url, HF_HOME=str(work / "hf"), HF_HUB_DISABLE_XET="1",
                      HF_HUB_DISABLE_PROGRESS_BARS="1", HF_HUB_DISABLE_TELEMETRY="1")
    for var in ("HF_HUB_OFFLINE", "VDNA_OFFLINE", "HF_HUB_CACHE"):
        os.environ.pop(var, None)
    from huggingface_hub import constants

    constants.ENDPOINT, constants.HF_HUB_DISABLE_XET, constants.HF_HUB_OFFLINE = hub.url, True, False
    from vdnacli import hub as H
    from vdnacli.catalog import Catalog

    pub = Catalog(work / "pub")
    pub.put("faces", lite0_like(0))
    size = (pub.registry.entries_dir / "faces.h5").stat().st_size
    times = {"push": [], "pull": [], "pull --offline": [], "re-pull (unchanged)": []}
    try:
        for k in range(args.repeats):
            os.environ["HF_TOKEN"] = TOKEN
            t = time.perf_counter()
            H.push(pub, "faces", f"me/bench{k}")
            times["push"].append(time.perf_counter() - t)
            del os.environ["HF_TOKEN"]
            cat = Catalog(work / f"reg{k}")
            t = time.perf_counter()
            H.pull(cat, f"me/bench{k}")
            times["pull"].append(time.perf_counter() - t)
            t = time.perf_counter()
            H.pull(cat, f"me/bench{k}")
            times["re-pull (unchanged)"].append(time.perf_counter() - t)
            t = time.perf_counter()
            H.pull(Catalog(work / f"off{k}"), f"me/bench{k}", offline=True)
            times["pull --offline"].append(time.perf_counter() - t)
        d = cat.compare("faces", "faces").distance
    finally:
        hub.stop()
    import vdnacli

    print(f"code: {Path(vdnacli.__file__).parent.parent}")
    print(f"Lite0-shaped DNA (hist + gauss), entry file {size / 1e3:.0f} kB; median of {args.repeats}, "
          f"{os.cpu_count()} CPUs ({os.uname().nodename})")
    for step, ts in times.items():
        print(f"  {step:22s} {statistics.median(ts):.3f} s")
    print(f"  pulled vs itself: EMD {d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
