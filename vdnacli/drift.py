"""Drift checks against a reference DNA, and how many images a DNA needs.

`drift`: a new batch of images is computed exactly as the reference was (its recorded
settings, as `--like`, and its shard count), then compared with it (vdnacli.stats): the
batch has drifted when the shard permutation test rejects "one distribution" at `alpha`
and, with a `threshold`, the distance left above the noise floor exceeds it.

`plan`: how the noise of a DNA falls with its number of images, measured on the reference's
own shards (distances between disjoint groups of 1, 2, ... shards), fitted as
noise(n1, n2) = kappa * (1/n1 + 1/n2)^beta, and solved for the n at which the noise floor of
a distance to the reference is `precision` times that distance.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from registry import EntryExistsError, RegistryError, validate_name
from vdnacli import stats
from vdnacli.distances import METRICS, compare, make_selection
from vdnacli.errors import ConfigError, VdnaError


# -- drift ------------------------------------------------------------------------------------
@dataclass
class DriftResult:
    reference: str
    source: str
    result: stats.CompareCI
    alpha: float
    threshold: float | None
    drift: bool
    reason: str
    images: int = 0  # images of the source counted
    failed: list = field(default_factory=list)
    saved: str | None = None
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        r = self.result
        return {"reference": self.reference, "source": self.source, "a": self.reference, "b": self.source,
                "metric": r.metric, "distance": r.overall.distance,
                "per_layer": {l: v.distance for l, v in r.per_layer.items()}, **r.as_dict(),
                "drift": self.drift, "reason": self.reason, "alpha": self.alpha, "threshold": self.threshold,
                "source_images": self.images, "failed": len(self.failed), "saved": self.saved,
                "top_neurons": [{"layer": l, "neuron": i, "distance": d, "noise_floor": nf}
                                for l, i, d, nf in r.moved(10)]}


def check_alpha(alpha: float, permutations: int) -> None:
    if not 0 < alpha < 1:
        raise ConfigError("--alpha must be between 0 and 1")
    if permutations < 1:
        raise ConfigError("drift needs the permutation test: --permutations must be at least 1")
    if 1 / (permutations + 1) > alpha:
        raise ConfigError(f"with {permutations} permutations no p-value falls below {1 / (permutations + 1):.4g}, "
                          f"so --alpha {alpha} could never be reached: raise --permutations")


def verdict(result: stats.CompareCI, alpha: float, threshold: float | None) -> tuple[bool, str]:
    o = result.overall
    if o.p_value is None:
        raise ConfigError("drift needs a permutation test, which fd does not have: use --metric emd or nfd")
    if o.p_value >= alpha:
        return False, f"p = {o.p_value:.4g} >= alpha {alpha}: no evidence that the distributions differ"
    if threshold is not None and o.estimate <= threshold:
        return False, (f"p = {o.p_value:.4g} < alpha {alpha}, but the distance above the noise floor "
                       f"({o.estimate:.4g}) is within --threshold {threshold}")
    extra = f" and the distance above the noise floor ({o.estimate:.4g}) exceeds {threshold}" if threshold is not None else ""
    return True, f"p = {o.p_value:.4g} < alpha {alpha}{extra}"


def drift(catalog, reference: str, source: Path, alpha: float = 0.01, threshold: float | None = None,
          metric: str = "emd", layers=None, neurons=None, weights=None, permutations: int = stats.PERMUTATIONS,
          seed: int = 0, save: str | None = None, device: str = "auto", batch_size: int = 32, workers: int = 0,
          offline: bool = False, limit: int | None = None, progress=None) -> DriftResult:
    """Compute SOURCE as REFERENCE was computed, compare with its interval and test, and decide."""
    from vdnacli.build import resolve_settings
    from vdnacli.extractors import load_extractor
    from vdnacli.pipeline import Run, announce, check_weights, compute_dna
    from vdnacli.sources import list_images

    check_alpha(alpha, permutations)
    if threshold is not None and threshold < 0:
        raise ConfigError("--threshold must be 0 or more")
    if metric not in METRICS:
        raise ConfigError(f"unknown metric '{metric}'; choose from {', '.join(METRICS)}")
    if metric == "fd":
        raise ConfigError("drift needs a permutation test, which fd does not have: use --metric emd or nfd")
    if save is not None:
        validate_name(save)
        if save in catalog.registry:
            raise EntryExistsError(save)
    kind = METRICS[metric]
    ref = catalog.get(reference, [kind], shards=True)
    if ref.shards is None:
        raise stats.NoShardsError(reference)
    settings, ranges, notes = resolve_settings(catalog, like=reference)
    if kind not in settings.kinds:
        raise ConfigError(f"'{reference}' holds no {kind} data for --metric {metric}")
    refs = list_images(source, limit, seed)  # a bad source fails before the network loads
    announce(progress, f"loading {settings.extractor}…")
    ext = load_extractor(settings.extractor, device, settings.weights, offline=offline)
    check_weights(settings, ext)
    name = save or f"{Path(source).name or 'source'}"
    dna, report = compute_dna(refs, ext, settings, Run(batch_size=batch_size, workers=workers, progress=progress),
                              ranges=ranges, name=name)
    dna.meta["origin"] = {"kind": "images", "source_name": Path(source).name, "limit": limit,
                          "seed": seed if limit else None, "like": reference}
    sel = make_selection(ref.layers, layers, neurons)
    result = stats.compare_ci(ref, dna, metric, sel, weights, permutations, seed)
    is_drift, reason = verdict(result, alpha, threshold)
    if save is not None:
        catalog.put(save, dna)
    return DriftResult(reference, str(source), result, alpha, threshold, is_drift, reason, report.images,
                       report.failed, save, notes)


# -- plan -------------------------------------------------------------------------------------
@dataclass
class PlanRow:
    name: str
    distance: float
    images: int | None  # None: not reachable with this reference (its own noise is too large)


@dataclass
class Plan:
    reference: str
    metric: str
    precision: float
    reference_images: int
    kappa: float
    beta: float
    points: list[tuple[int, int, float]]  # (images group 1, images group 2, distance) measured on shards
    distance: float | None  # the distance the answer is for
    distance_source: str
    images: int | None
    rows: list[PlanRow]

    def noise(self, n: float, m: float | None = None) -> float:
        """The noise floor of a distance between samples of n and m images (m: the reference's)."""
        m = self.reference_images if m is None else m
        return self.kappa * (1 / n + 1 / m) ** self.beta

    def needed(self, distance: float) -> int | None:
        """Images whose noise floor against the reference is precision x distance (None: never)."""
        target = self.precision * distance
        if target <= 0:
            return None
        inv = (target / self.kappa) ** (1 / self.beta) - 1 / self.reference_images
        if inv <= 0:
            return None
        return int(math.ceil(1 / inv))

    def reference_needed(self, distance: float) -> int:
        """Images the reference itself needs before `distance` can be measured to `precision` at all."""
        target = self.precision * distance
        return int(math.ceil(1 / (target / self.kappa) ** (1 / self.beta))) + 1

    def as_dict(self) -> dict:
        return {"reference": self.reference, "metric": self.metric, "precision": self.precision,
                "distance": self.distance, "distance_from": self.distance_source, "images_needed": self.images,
                "reference_images": self.reference_images,
                "model": {"kappa": self.kappa, "beta": self.beta,
                          "formula": "noise_floor(n1, n2) = kappa * (1/n1 + 1/n2)^beta"},
                "measured": [{"images": [a, b], "distance": d} for a, b, d in self.points],
                "entries": [{"name": r.name, "distance": r.distance, "images_needed": r.images} for r in self.rows]}


def _noise_points(ref, metric: str, sel, weights, seed: int, per_size: int = 6):
    """(images of group 1, images of group 2, distance) between disjoint groups of m shards each,
    m = 1 .. K//2: how the distance between two samples of one distribution falls with size."""
    eng = stats.GroupDistances(ref, ref, metric, sel, weights)
    k = eng.ka
    rng = np.random.default_rng(seed)
    g1s, g2s = [], []
    for m in range(1, k // 2 + 1):
        seen = set()
        for _ in range(per_size * 3):
            perm = rng.permutation(k)
            key = (tuple(sorted(perm[:m])), tuple(sorted(perm[m: 2 * m])))
            if key in seen or key[::-1] in seen:
                continue
            seen.add(key)
            g1, g2 = np.zeros(eng.J), np.zeros(eng.J)
            g1[list(perm[:m])] = 1
            g2[list(perm[m: 2 * m])] = 1
            g1s.append(g1)
            g2s.append(g2)
            if len(seen) >= per_size:
                break
    g1, g2 = np.array(g1s), np.array(g2s)
    overall = eng.evaluate(g1, g2)[0]
    return [(int(a), int(b), float(d)) for a, b, d in zip(eng.group_images(g1), eng.group_images(g2), overall)]


def fit_noise(points, metric: str) -> tuple[float, float]:
    """(kappa, beta) of noise = kappa * (1/n1 + 1/n2)^beta, least squares in log space; beta is
    fixed at its theoretical value (emd 1/2, Fréchet 1) when the sizes do not vary enough."""
    x = np.log([1 / a + 1 / b for a, b, _ in points])
    y = np.log([max(d, 1e-300) for _, _, d in points])
    beta0 = 0.5 if metric == "emd" else 1.0
    if np.ptp(x) < 0.3:
        return float(np.exp(np.mean(y - beta0 * x))), beta0
    beta, logk = np.polyfit(x, y, 1)
    beta = float(np.clip(beta, 0.2, 1.5))
    return float(np.exp(np.mean(y - beta * x))), beta


def plan(catalog, reference: str, precision: float = 0.02, distance: float | None = None, metric: str = "emd",
         layers=None, neurons=None, weights=None, seed: int = 0, others: list[str] | None = None) -> Plan:
    if not 0 < precision < 1:
        raise ConfigError("--precision must be between 0 and 1 (0.02 = ±2 %)")
    if distance is not None and distance <= 0:
        raise ConfigError("--distance must be positive")
    kind = METRICS.get(metric)
    if kind is None:
        raise ConfigError(f"unknown metric '{metric}'; choose from {', '.join(METRICS)}")
    ref = catalog.get(reference, [kind], shards=True)
    if ref.shards is None:
        raise stats.NoShardsError(reference)
    if len(ref.shards.nonempty) < 2:
        raise stats.NoIntervalError(f"'{reference}' has fewer than two shards holding images")
    sel = make_selection(ref.layers, layers, neurons)
    points = _noise_points(ref, metric, sel, weights, seed)
    kappa, beta = fit_noise(points, metric)
    rows = []
    for name in (others if others is not None else catalog.names()):
        if name == reference:
            continue
        try:
            meta = catalog.registry.meta(name)  # skip other networks without reading their arrays
            if meta.get("extractor") != ref.meta.get("extractor") or kind not in (meta.get("kinds") or []):
                continue
            d = compare(ref, catalog.get(name, [kind]), metric, sel, weights).distance
        except (VdnaError, RegistryError):  # incomparable or unreadable entries are simply not rows
            continue
        rows.append(PlanRow(name, d, None))
    rows.sort(key=lambda r: r.distance)
    result = Plan(reference, metric, precision, ref.num_images, kappa, beta, points, distance,
                  "given", None, rows)
    for r in rows:
        r.images = result.needed(r.distance) if r.distance > 0 else None
    if distance is None and rows:
        result.distance = float(np.median([r.distance for r in rows]))
        result.distance_source = f"median distance from {reference} to {len(rows)} other entr{'y' if len(rows) == 1 else 'ies'}"
    if result.distance is None:
        raise ConfigError(f"no other comparable entry to take a typical distance from: pass --distance D "
                          f"(the distance to {reference} you want to measure)")
    result.images = result.needed(result.distance)
    return result
