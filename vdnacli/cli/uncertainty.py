"""Rendering of distances with their uncertainty (compare --ci, nearest --ci, drift)."""
from __future__ import annotations

from vdnacli.cli.output import Output, bar

NO_INTERVAL = {"ci": None, "noise_floor": None, "p_value": None}


def describe_p(p: float | None, permutations: int, exact: bool, seed: int, metric: str = "emd") -> str:
    if p is None and metric == "fd":
        return "no permutation test (fd: each permutation needs a matrix square root per layer)"
    if p is None:
        return "not tested (--permutations 0)"
    how = f"all {permutations} shard splits" if exact else f"{permutations} shard permutations, seed {seed}"
    return f"p = {p:.4g} ({how})"


def render_ci(out: Output, r, top: int = 10) -> None:
    """The interval, noise floor and p-value of a CompareCI, overall and per layer."""
    o = r.overall
    pct = f"{r.level * 100:g} %"
    out.print(f"{pct} interval for the population distance: [{o.lo:.4f}, {o.hi:.4f}]  "
              f"(jackknife over {r.shards[0]} + {r.shards[1]} shards, se {o.se:.4f})")
    out.print(f"noise floor: {o.noise_floor:.4f} — what two samples of {r.images[0]} and {r.images[1]} images from "
              f"one distribution would show; distance above it: {o.estimate:.4f}")
    out.print(f"same distribution? {describe_p(o.p_value, r.permutations, r.exact, r.seed, r.metric)}")
    vmax = max((v.distance for v in r.per_layer.values()), default=0.0)
    out.table("per layer", ["layer", r.metric, f"{pct} interval", "noise floor", "p", ""],
              [[l, v.distance, f"[{v.lo:.4f}, {v.hi:.4f}]", v.noise_floor, v.p_value, bar(v.distance, vmax)]
               for l, v in r.per_layer.items()], numeric={1, 3, 4})
    moved = r.moved(top)
    if moved:
        out.table(f"top {len(moved)} neurons above their noise floor", ["layer", "neuron", r.metric, "noise floor"],
                  [list(m) for m in moved], numeric={1, 2, 3})
