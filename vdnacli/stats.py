"""How precise a DNA distance is, from the DNAs of shards (vdnacli.shards).

Every statistic here is a distance between two *groups of shards*: a group's DNA is the sum
of its shards' DNAs, so any split of the shards of A and B is a pair of DNAs whose distance
can be computed without the images. For EMD this is one matrix product: with F_j the
cumulative histograms of shard j divided by its activation count, the CDF of a group G is
sum_j w_j F_j (w_j = shard j's share of G's activations), and the per-neuron EMD between
groups G1 and G2 is sum_bins |sum_j c_j F_j| with c = w(G1) - w(G2). All the splits asked
for are rows of one coefficient matrix, evaluated in one pass over the histograms.

What is computed (docs/statistics.md has the derivations, assumptions and measured coverage):
  jackknife    delete one shard of A (K_A times) and of B (K_B times); the weighted
               delete-a-group jackknife (unequal shard sizes) gives the variance of the
               distance, A's and B's parts added.
  noise floor  the distance two independent samples of these sizes from one distribution would
               show: from distances between halves of each side's shards, scaled to the sizes
               (EMD falls as sqrt(1/n1 + 1/n2), the Fréchet distances as 1/n1 + 1/n2).
  interval     95 % for the population distance D (the distance between the distributions the
               images were drawn from): upper end d + t*se (E[d] >= D: sampling noise only adds
               to an L1 or Fréchet distance), lower end the noise-corrected value of d - t*se
               (EMD: sqrt(x^2 - floor^2); Fréchet: x - floor). It always holds d.
  p-value      shard-level permutation test of "A and B come from one distribution": the
               shards of both are exchangeable under it; the statistic is the distance divided
               by its noise scale at the two groups' sizes (so groups of unequal sizes compare
               fairly). Exact (every split) when the splits are few, else Monte Carlo, seeded.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import combinations
from statistics import NormalDist
from typing import Mapping

import numpy as np

from vdnacli.distances import METRICS, compare, make_selection
from vdnacli.dna import DNA, check_compatible
from vdnacli.errors import ConfigError, IncompatibleDNAError

LEVEL = 0.95
PERMUTATIONS = 999
MAX_HALF_SPLITS = 16  # per side, for the noise floor
_CELLS_PER_BLOCK = 1 << 23  # rows x neurons x bins evaluated at once (float32: 32 MiB)


# -- small pieces of statistics ------------------------------------------------------------
def t_quantile(p: float, df: float) -> float:
    """Student's t quantile (df may be fractional, as Welch-Satterthwaite gives it): closed forms
    for df = 1 and 2; beyond, Cornish-Fisher (Hill 1970) refined by Newton steps on the CDF
    (the density integrated by Simpson's rule), within 1e-6 of the exact value."""
    if not 0 < p < 1:
        raise ValueError("p must be in (0, 1)")
    if not math.isfinite(df) or df > 1e6:
        return NormalDist().inv_cdf(p)
    df = max(df, 1.0)
    if df == 1:
        return math.tan(math.pi * (p - 0.5))
    if df == 2:
        return (2 * p - 1) / math.sqrt(2 * p * (1 - p))
    z = NormalDist().inv_cdf(p)
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160
    x = z + g1 / df + g2 / df**2 + g3 / df**3 + g4 / df**4
    c = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)

    def density(t):
        return c * (1 + t * t / df) ** (-(df + 1) / 2)

    for _ in range(4):
        ts = np.linspace(0.0, x, 401)
        ys = density(ts)
        cdf = 0.5 + (x / 1200) * (ys[0] + ys[-1] + 4 * ys[1:-1:2].sum() + 2 * ys[2:-1:2].sum())
        x -= (cdf - p) / density(x)
    return float(x)


def jackknife(theta: np.ndarray, deleted: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Delete-a-group jackknife for groups of unequal sizes (Busing, Meijer & van der Leeden 1999).

    theta: the estimate from all groups [...]; deleted: the estimates without group j [K, ...];
    sizes: the groups' sizes [K]. Returns (bias-corrected estimate, variance of theta). With equal
    sizes the variance is the textbook (K-1)/K * sum_j (theta_-j - mean)^2."""
    sizes = np.asarray(sizes, dtype=np.float64)
    k = len(sizes)
    if k < 2:
        raise ValueError("the jackknife needs at least two groups")
    n = sizes.sum()
    h = (n / sizes).reshape((k,) + (1,) * (deleted.ndim - 1))
    est = k * theta - ((1 - sizes / n).reshape(h.shape) * deleted).sum(axis=0)
    pseudo = h * theta - (h - 1) * deleted
    var = ((pseudo - est) ** 2 / (h - 1)).sum(axis=0) / k
    return est, var


def welch_df(var_a, var_b, ka: int, kb: int):
    """Welch-Satterthwaite degrees of freedom of var_a + var_b estimated from ka and kb groups."""
    var_a, var_b = np.asarray(var_a, dtype=np.float64), np.asarray(var_b, dtype=np.float64)
    num = (var_a + var_b) ** 2
    den = var_a**2 / max(ka - 1, 1) + var_b**2 / max(kb - 1, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        df = np.where(den > 0, num / np.where(den > 0, den, 1), float(ka + kb - 2))
    return df


def permutation_p(observed: float, permuted: np.ndarray, exact: bool) -> float:
    """p-value of a one-sided permutation test (large statistics are extreme). `exact`: `permuted`
    holds the statistic of every split, the observed one included; else Monte Carlo draws, to
    which the observed split is added (Phipson & Smyth 2010), so p is never 0."""
    permuted = np.asarray(permuted, dtype=np.float64)
    hits = int((permuted >= observed * (1 - 1e-9) - 1e-12).sum())
    if exact:
        return hits / len(permuted)
    return (1 + hits) / (1 + len(permuted))


def noise_scale(metric: str, n1, n2):
    """How a distance between two samples of one distribution scales with their sizes."""
    s = 1.0 / np.asarray(n1, dtype=np.float64) + 1.0 / np.asarray(n2, dtype=np.float64)
    return np.sqrt(s) if metric == "emd" else s


def remove_noise(metric: str, value, floor):
    """The population distance whose expected sample distance is `value`, given the noise floor
    (EMD: E[d]^2 ~ D^2 + floor^2, an over-correction, so lower bounds stay conservative; Fréchet
    distances: E[d] ~ D + floor)."""
    value, floor = np.asarray(value, dtype=np.float64), np.asarray(floor, dtype=np.float64)
    if metric == "emd":
        return np.sqrt(np.maximum(np.maximum(value, 0) ** 2 - floor**2, 0))
    return np.maximum(value - floor, 0)


# -- the engine: distances between groups of shards -------------------------------------------
@dataclass
class _Side:
    name: str
    images: np.ndarray  # images per nonempty shard
    index: np.ndarray  # which shards of the DNA these are


def _side(d: DNA, label: str) -> _Side:
    if d.shards is None:
        raise NoShardsError(d.meta.get("name", label))
    keep = d.shards.nonempty
    return _Side(d.meta.get("name", label), d.shards.images[keep].astype(np.int64), keep)


class NoIntervalError(IncompatibleDNAError):
    """No interval can be given (a side keeps no shards, or too few hold images)."""


class NoShardsError(NoIntervalError):
    def __init__(self, name: str):
        self.name = name
        super().__init__(f"'{name}' keeps no shard DNAs, so no interval can be given for its distances; "
                         f"recompute it with shards: vdna add {name} SOURCE --replace --shards 8")


class GroupDistances:
    """Distances between groups of the shards of two DNAs, over a selection of neurons.

    Shards are numbered 0..J-1: first A's nonempty shards, then B's. A group is a 0/1 row over
    them; `evaluate(g1, g2)` gives, for every row pair, the overall distance (as `compare`
    aggregates it: mean or weighted sum over neurons, or for "fd" the mean over layers), the
    per-layer distances and (emd, nfd) the per-neuron distances.
    """

    def __init__(self, a: DNA, b: DNA, metric: str = "emd", selection=None, weights=None):
        if metric not in METRICS:
            raise ConfigError(f"unknown metric '{metric}'; choose from {', '.join(METRICS)}")
        self.metric, self.kind = metric, METRICS[metric]
        check_compatible(a, b, self.kind)
        self.sa, self.sb = _side(a, "A"), _side(b, "B")
        attr = {"hist": "hist", "gauss": "gauss", "layer-gauss": "layer_gauss"}[self.kind]
        for s, d in ((self.sa, a), (self.sb, b)):
            if getattr(d.shards, attr) is None:
                raise IncompatibleDNAError(f"'{s.name}' keeps no {self.kind} shards")
        self.a, self.b = a, b
        self.selection = dict(selection if selection is not None else make_selection(a.layers))
        self.layers = list(self.selection)
        self.sizes = np.concatenate([self.sa.images, self.sb.images])
        self.ka, self.kb = len(self.sa.images), len(self.sb.images)
        self.J = self.ka + self.kb
        self.neurons = {l: (len(idx) if idx is not None else a.layers[l]) for l, idx in self.selection.items()}
        self.offsets = np.cumsum([0] + [self.neurons[l] for l in self.layers])
        if weights is not None:
            if metric == "fd":
                raise ConfigError("fd is a per-layer distance: neuron weights and masks do not apply to it")
            self.weights = np.concatenate([np.asarray(weights[l], dtype=np.float64).ravel() for l in self.layers])
            if self.weights.shape != (self.offsets[-1],):
                raise ConfigError("weights do not match the selected neurons")
        else:
            self.weights = None

    # rows ----------------------------------------------------------------------------------
    def observed(self) -> tuple[np.ndarray, np.ndarray]:
        g1 = np.zeros((1, self.J))
        g1[0, : self.ka] = 1
        return g1, 1 - g1

    def delete_one(self, side: str) -> tuple[np.ndarray, np.ndarray]:
        """One row per shard of `side` ("a"/"b"): A and B with that shard left out."""
        g1, g2 = self.observed()
        k, start = (self.ka, 0) if side == "a" else (self.kb, self.ka)
        g1, g2 = np.repeat(g1, k, 0), np.repeat(g2, k, 0)
        for r in range(k):
            (g1 if side == "a" else g2)[r, start + r] = 0
        return g1, g2

    def half_splits(self, side: str, limit: int = MAX_HALF_SPLITS, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Rows splitting one side's shards into two halves (all splits when few, else `limit`
        random ones)."""
        k, start = (self.ka, 0) if side == "a" else (self.kb, self.ka)
        if k < 2:
            return np.zeros((0, self.J)), np.zeros((0, self.J))
        half = k // 2
        total = math.comb(k, half) // (2 if 2 * half == k else 1)
        if total <= limit:
            picks = [c for c in combinations(range(k), half) if 2 * half != k or 0 in c]
        else:
            rng = np.random.default_rng(seed)
            picks = [tuple(rng.permutation(k)[:half]) for _ in range(limit)]
        g1 = np.zeros((len(picks), self.J))
        g2 = np.zeros((len(picks), self.J))
        g2[:, start : start + k] = 1
        for r, c in enumerate(picks):
            g1[r, [start + j for j in c]] = 1
            g2[r, [start + j for j in c]] = 0
        return g1, g2

    def permutations(self, count: int = PERMUTATIONS, seed: int = 0) -> tuple[np.ndarray, np.ndarray, bool]:
        """Rows assigning K_A of all J shards to A and the rest to B: every such split (exact) when
        there are at most count + 1 of them, else `count` random ones. Returns (g1, g2, exact)."""
        total = math.comb(self.J, self.ka)
        if total <= count + 1:
            picks = list(combinations(range(self.J), self.ka))
            exact = True
        else:
            rng = np.random.default_rng(seed)
            picks = [rng.permutation(self.J)[: self.ka] for _ in range(count)]
            exact = False
        g1 = np.zeros((len(picks), self.J))
        for r, c in enumerate(picks):
            g1[r, list(c)] = 1
        return g1, 1 - g1, exact

    def group_images(self, g: np.ndarray) -> np.ndarray:
        return g @ self.sizes

    # evaluation ----------------------------------------------------------------------------
    def evaluate(self, g1: np.ndarray, g2: np.ndarray, coarse: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(overall [R], per layer [R, L], per neuron [R, N] or None for fd). `coarse` > 1 (emd):
        the EMD as a Riemann sum over every coarse-th bin's CDF (coarse times cheaper; the
        permutation test's statistic, see `coarse_factor`)."""
        return self.evaluate_many([(g1, g2, coarse)])[0]

    def evaluate_many(self, sets: list[tuple[np.ndarray, np.ndarray, int]]) -> list[tuple]:
        """`evaluate` for several sets of rows in one pass over the shard arrays."""
        sets = [(np.atleast_2d(g1), np.atleast_2d(g2), c) for g1, g2, c in sets]
        if self.metric == "fd":
            out = []
            for g1, g2, _ in sets:
                per_layer = np.stack([self._fd_layer(l, g1, g2) for l in self.layers], axis=1)
                out.append((per_layer.mean(axis=1), per_layer, None))
            return out
        layer_parts = [self._emd_layer(l, sets) if self.metric == "emd" else
                       [self._nfd_layer(l, g1, g2) for g1, g2, _ in sets] for l in self.layers]
        out = []
        for k in range(len(sets)):
            per_neuron = np.concatenate([parts[k] for parts in layer_parts], axis=1)
            per_layer = np.stack([per_neuron[:, self.offsets[i]: self.offsets[i + 1]].mean(axis=1)
                                  for i in range(len(self.layers))], axis=1)
            overall = per_neuron.mean(axis=1) if self.weights is None else per_neuron @ self.weights
            out.append((overall, per_layer, per_neuron))
        return out

    def _shard_arrays(self, attr: str, layer: str):
        idx = self.selection[layer]
        out = []
        for d, s in ((self.a, self.sa), (self.b, self.sb)):
            v = getattr(d.shards, attr)[layer]
            out.append((v, s.index, idx))
        return out

    def _emd_layer(self, layer: str, sets) -> list[np.ndarray]:
        parts = []
        for h, keep, idx in self._shard_arrays("hist", layer):
            h = h[keep]
            parts.append(h if idx is None else h[:, idx])
        n, bins = parts[0].shape[1], parts[0].shape[2]
        totals = np.concatenate([p[:, 0, :].sum(axis=1, dtype=np.int64) for p in parts]).astype(np.float64)
        coefs, outs = [], []
        for g1, g2, _ in sets:
            w1, w2 = g1 * totals, g2 * totals
            coefs.append((w1 / w1.sum(axis=1, keepdims=True) - w2 / w2.sum(axis=1, keepdims=True)).astype(np.float32))
            outs.append(np.empty((g1.shape[0], n)))
        work = sum(c.shape[0] * (bins // co) for c, (_, _, co) in zip(coefs, sets))
        step = max(1, _CELLS_PER_BLOCK // max(1, work))
        for s in range(0, n, step):
            cdf = np.concatenate([np.cumsum(p[:, s : s + step], axis=-1, dtype=np.int64) for p in parts])
            cdf = (cdf / cdf[:, :, -1:].clip(min=1)).astype(np.float32)  # [J, neurons, bins]
            m = cdf.shape[1]
            for c, out, (_, _, coarse) in zip(coefs, outs, sets):
                f = cdf[:, :, coarse - 1 :: coarse] if coarse > 1 else cdf
                lo, hi = _active_bins(f)
                if hi <= lo:
                    out[:, s : s + m] = 0.0
                    continue
                f = np.ascontiguousarray(f[:, :, lo:hi])
                x = c @ f.reshape(self.J, -1)
                np.abs(x, out=x)
                out[:, s : s + m] = x.reshape(c.shape[0], m, hi - lo).sum(axis=-1) * coarse
        return outs

    def _nfd_layer(self, layer: str, g1, g2) -> np.ndarray:
        sums, sqs = [], []
        for (s, q), keep, idx in self._shard_arrays("gauss", layer):
            s, q = s[keep], q[keep]
            sums.append(s if idx is None else s[:, idx])
            sqs.append(q if idx is None else q[:, idx])
        s, q = np.concatenate(sums), np.concatenate(sqs)
        moments = []
        for g in (g1, g2):  # Gaussian.mean / .var, vectorised over rows
            m = (g @ self.sizes)[:, None]
            gs, gq = g @ s, g @ q
            mean = gs / np.maximum(m, 1)
            with np.errstate(divide="ignore", invalid="ignore"):
                var = np.where(m >= 2, np.maximum((gq - gs * gs / np.maximum(m, 1)) / np.maximum(m - 1, 1), 0.0), 0.0)
            moments.append((mean, var))
        (m1, v1), (m2, v2) = moments
        return np.maximum((m1 - m2) ** 2 + v1 + v2 - 2.0 * np.sqrt(v1 * v2), 0.0)

    def _fd_layer(self, layer: str, g1, g2) -> np.ndarray:
        from vdnacli.distances import frechet_layer
        from vdnacli.dna import LayerGaussian

        sums, outers = [], []
        for (s, o), keep, idx in self._shard_arrays("layer_gauss", layer):
            s, o = s[keep], o[keep]
            if idx is not None:
                s, o = s[:, idx], o[:, idx][:, :, idx]
            sums.append(s)
            outers.append(o)
        s, o = np.concatenate(sums), np.concatenate(outers)
        res = np.empty(g1.shape[0])
        for r in range(g1.shape[0]):
            a = LayerGaussian(int(g1[r] @ self.sizes), g1[r] @ s, np.tensordot(g1[r], o, 1))
            b = LayerGaussian(int(g2[r] @ self.sizes), g2[r] @ s, np.tensordot(g2[r], o, 1))
            res[r] = frechet_layer(a, b)
        return res


def coarse_factor(metric: str, bins: int | None) -> int:
    """The bin stride of the permutation test's EMD: about 100 CDF points per neuron, which
    makes each permutation bins/100 times cheaper than the exact EMD. Any statistic gives a
    valid permutation test as long as the observed split gets the same; this one differs from
    the exact EMD by about 1 % (docs/statistics.md)."""
    if metric != "emd" or not bins:
        return 1
    return max(1, bins // 100)


def _active_bins(cdf: np.ndarray) -> tuple[int, int]:
    """The bins outside of which every CDF is 0 (below) or 1 (above): they add nothing to an EMD."""
    below = (cdf > 0).any(axis=(0, 1))
    above = (cdf < 1).any(axis=(0, 1))
    nz = np.flatnonzero(below)
    lt = np.flatnonzero(above)
    if nz.size == 0 or lt.size == 0:
        return 0, 0
    return int(nz[0]), int(lt[-1]) + 1


# -- results -------------------------------------------------------------------------------
@dataclass
class Interval:
    distance: float  # the plug-in distance (what `compare` prints)
    lo: float
    hi: float
    se: float
    noise_floor: float
    estimate: float  # the distance with the noise floor removed (remove_noise)
    p_value: float | None = None

    def as_dict(self) -> dict:
        return {"distance": self.distance, "ci": [self.lo, self.hi], "se": self.se,
                "noise_floor": self.noise_floor, "estimate": self.estimate, "p_value": self.p_value}


@dataclass
class CompareCI:
    a: str
    b: str
    metric: str
    overall: Interval
    per_layer: dict[str, Interval]
    shards: tuple[int, int]  # nonempty shards of A and B
    images: tuple[int, int]
    level: float = LEVEL
    permutations: int = 0
    exact: bool = False
    seed: int = 0
    per_neuron: dict[str, np.ndarray] | None = None  # plug-in per-neuron distances
    neuron_floor: dict[str, np.ndarray] | None = None  # per-neuron noise floors
    selection: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        """The uncertainty fields of `compare --ci --json` (the distance itself is printed beside)."""
        o = self.overall
        return {"ci": [o.lo, o.hi], "level": self.level, "se": o.se, "noise_floor": o.noise_floor,
                "estimate": o.estimate, "p_value": o.p_value, "shards": list(self.shards),
                "images": list(self.images), "permutations": self.permutations, "exact": self.exact,
                "seed": self.seed, "per_layer_ci": {l: v.as_dict() for l, v in self.per_layer.items()}}

    def moved(self, k: int = 10) -> list[tuple[str, int, float, float]]:
        """(layer, neuron, distance, noise floor): the neurons furthest above their noise floor."""
        if self.per_neuron is None:
            return []
        rows = []
        for l, d in self.per_neuron.items():
            nf = self.neuron_floor[l]
            idx = self.selection.get(l)
            for i in np.argsort(-(d - nf))[:k]:
                rows.append((l, int(idx[i]) if idx is not None else int(i), float(d[i]), float(nf[i])))
        rows.sort(key=lambda r: -(r[2] - r[3]))
        return rows[:k]


def _floor_constants(eng: GroupDistances, side: str, result, g1, g2):
    """Noise per unit of noise_scale from one side's half splits: (overall, per layer, per neuron)."""
    if g1.shape[0] == 0:
        return None
    overall, per_layer, per_neuron = result
    scale = noise_scale(eng.metric, eng.group_images(g1), eng.group_images(g2))
    c = overall / scale
    cl = per_layer / scale[:, None]
    cn = per_neuron / scale[:, None] if per_neuron is not None else None
    return c.mean(), cl.mean(axis=0), (cn.mean(axis=0) if cn is not None else None)


def _combine_floor(metric, ca, cb, na: int, nb: int):
    if metric == "emd":
        return np.sqrt(ca**2 / na + cb**2 / nb)
    return ca / na + cb / nb


def _estimation_rows(eng: GroupDistances, seed: int, extra: list | None = None):
    """Evaluate, in one pass, the rows every interval needs: the observed split, the jackknife
    deletions of A and of B, and the half splits of A and of B (noise floors); plus `extra`
    row sets (g1, g2, coarse), returned as a list."""
    sets = [eng.observed(), eng.delete_one("a"), eng.delete_one("b"),
            eng.half_splits("a", seed=seed), eng.half_splits("b", seed=seed)]
    g1 = np.vstack([s[0] for s in sets])
    g2 = np.vstack([s[1] for s in sets])
    results = eng.evaluate_many([(g1, g2, 1)] + list(extra or []))
    overall, per_layer, per_neuron = results[0]
    out, start = [], 0
    for s in sets:
        r = slice(start, start + s[0].shape[0])
        out.append(((overall[r], per_layer[r], per_neuron[r] if per_neuron is not None else None), s))
        start += s[0].shape[0]
    obs, ja, jb, ha, hb = out
    fa = _floor_constants(eng, "a", ha[0], *ha[1])
    fb = _floor_constants(eng, "b", hb[0], *hb[1])
    return obs[0], ja[0], jb[0], fa, fb, results[1:]


def compare_ci(a: DNA, b: DNA, metric: str = "emd", selection=None, weights: Mapping | None = None,
               permutations: int = PERMUTATIONS, seed: int = 0, level: float = LEVEL, plain=None) -> CompareCI:
    """The distance between a and b with its interval, noise floor and permutation p-value
    (overall and per layer). Both DNAs need shards, two or more of them holding images
    (NoIntervalError otherwise). `plain`: compare(a, b, ...) when already computed."""
    if not 0 < level < 1:
        raise ConfigError("the confidence level must be between 0 and 1")
    if permutations < 0:
        raise ConfigError("--permutations must be 0 or more")
    plain = plain if plain is not None else compare(a, b, metric, selection, weights)
    eng = GroupDistances(a, b, metric, plain.selection, weights)
    if eng.ka < 2 or eng.kb < 2:
        few = eng.sa.name if eng.ka < 2 else eng.sb.name
        raise NoIntervalError(f"'{few}' has fewer than two shards holding images: too few images for an interval")
    na, nb = int(eng.sa.images.sum()), int(eng.sb.images.sum())
    p_all = p_layers = None
    exact = False
    used = 0
    extra = []
    if permutations and metric != "fd":
        g1, g2, exact = eng.permutations(permutations, seed)
        used = g1.shape[0]
        o1, o2 = eng.observed()
        extra = [(np.vstack([o1, g1]), np.vstack([o2, g2]), coarse_factor(metric, a.meta.get("bins")))]
    obs, ja, jb, fa, fb, perm = _estimation_rows(eng, seed, extra)
    if perm:
        po, pl, _ = perm[0]
        sc = noise_scale(metric, eng.group_images(g1), eng.group_images(g2))
        s_obs = noise_scale(metric, na, nb)
        p_all = permutation_p(po[0] / s_obs, po[1:] / sc, exact)
        p_layers = [permutation_p(pl[0, i] / s_obs, pl[1:, i] / sc, exact) for i in range(len(eng.layers))]

    q = (1 + level) / 2

    def interval(theta_exact, theta, del_a, del_b, floor, p):
        _, va = jackknife(theta, del_a, eng.sa.images)
        _, vb = jackknife(theta, del_b, eng.sb.images)
        se = float(np.sqrt(va + vb))
        t = t_quantile(q, float(welch_df(va, vb, eng.ka, eng.kb)))
        hi = theta_exact + t * se
        lo = float(remove_noise(metric, max(theta_exact - t * se, 0.0), floor))
        lo = min(lo, theta_exact)
        return Interval(float(theta_exact), lo, float(hi), se, float(floor),
                        float(remove_noise(metric, theta_exact, floor)), p)

    floor = float(_combine_floor(metric, fa[0], fb[0], na, nb))
    overall = interval(plain.distance, obs[0][0], ja[0], jb[0], floor, p_all)
    per_layer = {}
    for i, l in enumerate(eng.layers):
        fl = float(_combine_floor(metric, fa[1][i], fb[1][i], na, nb))
        per_layer[l] = interval(plain.per_layer[l], obs[1][0, i], ja[1][:, i], jb[1][:, i], fl,
                                p_layers[i] if p_layers else None)
    neuron_floor = None
    if obs[2] is not None:
        nf = _combine_floor(metric, fa[2], fb[2], na, nb)
        neuron_floor = {l: nf[eng.offsets[i]: eng.offsets[i + 1]] for i, l in enumerate(eng.layers)}
    return CompareCI(plain.a, plain.b, metric, overall, per_layer, (eng.ka, eng.kb), (na, nb), level, used, exact,
                     seed, plain.per_neuron if metric != "fd" else None, neuron_floor, plain.selection, plain.warnings)


# -- nearest: intervals per row, and which ranks can be told apart -------------------------
@dataclass
class RankedRow:
    name: str
    distance: float | None
    interval: Interval | None
    distinct_from_next: bool | None = None  # None: unknown (no shards, or last row)
    note: str | None = None


def rank_ci(query: DNA, others: list[tuple[str, DNA]], metric: str = "emd", selection=None, weights=None,
            level: float = LEVEL, seed: int = 0) -> list[RankedRow]:
    """Each (name, DNA) in ranked order with its interval, and whether its distance can be told
    apart from the next row's: a jackknife of the difference of the two distances, paired over
    the query's shards, must exceed its `level` half-width by more than the two rows' noise
    floors differ (the most that unequal sampling noise alone can make of a tie)."""
    q = (1 + level) / 2
    rows: list[RankedRow] = []
    cache = []
    for name, other in others:
        plain = compare(query, other, metric, selection, weights)
        try:
            eng = GroupDistances(query, other, metric, plain.selection, weights)
            if eng.ka < 2 or eng.kb < 2:
                raise NoIntervalError("fewer than two shards hold images")
        except NoIntervalError as e:
            rows.append(RankedRow(name, plain.distance, None, None, str(e)))
            cache.append(None)
            continue
        o, ja, jb, fa, fb, _ = _estimation_rows(eng, seed)
        obs, ja, jb = o[0][0], ja[0], jb[0]
        na, nb = int(eng.sa.images.sum()), int(eng.sb.images.sum())
        floor = float(_combine_floor(metric, fa[0], fb[0], na, nb))
        _, va = jackknife(obs, ja, eng.sa.images)
        _, vb = jackknife(obs, jb, eng.sb.images)
        se = float(np.sqrt(va + vb))
        t = t_quantile(q, float(welch_df(va, vb, eng.ka, eng.kb)))
        lo = min(float(remove_noise(metric, max(plain.distance - t * se, 0.0), floor)), plain.distance)
        iv = Interval(plain.distance, lo, plain.distance + t * se, se, floor,
                      float(remove_noise(metric, plain.distance, floor)))
        rows.append(RankedRow(name, plain.distance, iv))
        cache.append((obs, ja, vb, eng.kb))
    for i in range(len(rows) - 1):
        a, b = cache[i], cache[i + 1]
        if a is None or b is None:
            continue
        delta = b[0] - a[0]
        _, vq = jackknife(delta, b[1] - a[1], _side(query, "query").images)
        var = vq + a[2] + b[2]
        kq = len(a[1])
        df = var**2 / (vq**2 / max(kq - 1, 1) + a[2] ** 2 / max(a[3] - 1, 1) + b[2] ** 2 / max(b[3] - 1, 1) or 1)
        t = t_quantile(q, float(df))
        gap = max(0.0, rows[i + 1].interval.noise_floor - rows[i].interval.noise_floor)
        rows[i].distinct_from_next = bool(abs(delta) - t * math.sqrt(var) > gap)
    return rows
