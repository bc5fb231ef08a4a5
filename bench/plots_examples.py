"""The example figures in docs/plots.md, made as a user makes them.

  python bench/plots_examples.py [--out docs] [--keep REGISTRY]

Writes the six sample sets (vdnacli.samples: digits, faces, photos; halves a/b, 40 images each),
adds each to a scratch registry with the offline efficientnet-lite0, then runs
  vdna compare digits-a faces-a --plot OUT/plots-compare.png
  vdna matrix --plot OUT/plots-matrix.png
and stores both PNGs with an adaptive 256-colour palette (same pixels to the eye, a third of
the bytes) so that each stays under 200 KB in the repository.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def vdna(*args, registry: Path) -> None:
    env = dict(os.environ, VDNA_REGISTRY=str(registry), HF_HUB_OFFLINE="1", NO_COLOR="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    subprocess.run([sys.executable, "-m", "vdnacli", *map(str, args)], check=True, env=env, stdout=subprocess.DEVNULL)


def palette(path: Path) -> int:
    from PIL import Image

    with Image.open(path) as im:
        im.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    return path.stat().st_size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "docs")
    ap.add_argument("--keep", type=Path, help="build the registry here and keep it (default: a temporary one)")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from vdnacli import samples

    with tempfile.TemporaryDirectory() as tmp:
        registry = args.keep or Path(tmp) / "registry"
        dirs = samples.write_demo_sets(Path(tmp) / "samples", per_half=40)
        for name, folder in dirs.items():
            vdna("add", name, folder, "--extractor", "efficientnet-lite0", registry=registry)
        for fig, cmd in (("plots-compare.png", ("compare", "digits-a", "faces-a")), ("plots-matrix.png", ("matrix",))):
            out = args.out / fig
            vdna(*cmd, "--plot", out, registry=registry)
            print(f"{out}: {palette(out) / 1024:.0f} KB")


if __name__ == "__main__":
    main()
