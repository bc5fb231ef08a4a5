"""The statistics of vdnacli.stats on synthetic DNAs whose population distances are known exactly."""
from __future__ import annotations

import math

import numpy as np
import pytest

from vdnacli import stats
from vdnacli.dna import DNA, new_meta
from vdnacli.errors import ConfigError
from vdnacli.shards import Shards

BINS, POSITIONS, K = 60, 16, 8


def population_cdf(mu: np.ndarray, sd: float) -> np.ndarray:
    """CDF per bin of activations N(mu, sd^2) binned as floor(v) clamped into [0, BINS-1]."""
    from scipy.special import ndtr

    edges = np.arange(1, BINS + 1)
    cdf = ndtr((edges[None, :] - mu[:, None]) / sd)
    cdf[:, -1] = 1.0
    return cdf


def population_emd(mu1, mu2, sd) -> float:
    """The population distance: EMD_avg between the binned populations (Eq. 3-5)."""
    return float(np.abs(population_cdf(mu1, sd) - population_cdf(mu2, sd)).sum(axis=1).mean())


def sample_dna(rng, mu: np.ndarray, images: int, name: str, k: int = K, image_sd: float = 2.0, pos_sd: float = 3.0):
    """A histogram DNA of `images` synthetic images with k shards: each image shifts every neuron
    by its own N(0, image_sd^2) (images, not activations, are the sampling unit), then draws
    POSITIONS activations N(mu + shift, pos_sd^2); shards assigned at random, as hashes do."""
    n = len(mu)
    shard = rng.integers(0, k, images)
    per = np.zeros((k, n, BINS), dtype=np.int64)
    for i in range(images):
        v = mu[:, None] + rng.normal(0, image_sd, (n, 1)) + rng.normal(0, pos_sd, (n, POSITIONS))
        b = np.clip(np.floor(v), 0, BINS - 1).astype(np.int64)
        for c in range(n):
            per[shard[i], c] += np.bincount(b[c], minlength=BINS)
    meta = new_meta(extractor="synthetic", weights_sha256=None, ranges_sha256=None, layers={"l0": n}, bins=BINS,
                    preprocessing={}, kinds=["hist"])
    meta["num_images"], meta["name"] = images, name
    return DNA(meta=meta, hist={"l0": per.sum(0)},
               shards=Shards(k, np.bincount(shard, minlength=k).astype(np.int64), hist={"l0": per}))


SD = math.hypot(2.0, 3.0)  # the population's spread: image shift and position noise together


def test_t_quantile_matches_scipy():
    from scipy.stats import t

    for df in (1, 2, 3, 5, 7, 7.5, 12, 30, 200):
        for p in (0.9, 0.975, 0.995):
            assert stats.t_quantile(p, df) == pytest.approx(t.ppf(p, df), abs=1e-6)


def test_jackknife_of_a_mean_is_the_textbook_one():
    rng = np.random.default_rng(0)
    groups = [rng.normal(size=m) for m in (5, 5, 5, 5, 5)]
    y = np.concatenate(groups)
    theta = y.mean()
    deleted = np.array([np.concatenate(groups[:j] + groups[j + 1:]).mean() for j in range(5)])
    est, var = stats.jackknife(theta, deleted, [5] * 5)
    means = np.array([g.mean() for g in groups])
    assert est == pytest.approx(theta)
    assert var == pytest.approx(((means - means.mean()) ** 2).sum() / (5 * 4))
    # unequal sizes (Busing et al.): the pseudo-values of a mean are the group means, and the mean is unbiased
    groups = [rng.normal(size=m) for m in (3, 9, 5, 12)]
    y = np.concatenate(groups)
    deleted = np.array([np.concatenate(groups[:j] + groups[j + 1:]).mean() for j in range(4)])
    sizes = np.array([len(g) for g in groups])
    est, var = stats.jackknife(y.mean(), deleted, sizes)
    assert est == pytest.approx(y.mean())
    h = len(y) / sizes
    means = np.array([g.mean() for g in groups])
    assert var == pytest.approx(((means - y.mean()) ** 2 / (h - 1)).sum() / 4)


def test_group_distances_equal_direct_emd():
    """Every row of the engine is the EMD between the summed DNAs of its two groups of shards."""
    from vdnacli.distances import emd_rows

    rng = np.random.default_rng(1)
    a = sample_dna(rng, np.array([20.0, 30.0]), 40, "a")
    b = sample_dna(rng, np.array([22.0, 29.0]), 40, "b")
    eng = stats.GroupDistances(a, b)
    g1, g2, _ = eng.permutations(30, seed=3)
    got, per_layer, per_neuron = eng.evaluate(g1, g2)
    allshards = np.concatenate([a.shards.hist["l0"][a.shards.nonempty], b.shards.hist["l0"][b.shards.nonempty]])
    for r in range(len(g1)):
        h1 = np.tensordot(g1[r], allshards, 1)
        h2 = np.tensordot(g2[r], allshards, 1)
        want = emd_rows(h1, h2)
        assert np.allclose(per_neuron[r], want, rtol=1e-5, atol=1e-4)
        assert got[r] == pytest.approx(want.mean(), rel=1e-5)
    coarse = eng.evaluate(g1, g2, coarse=3)[0]
    assert np.allclose(coarse, got, rtol=0.1)  # a Riemann sum of the same integral


@pytest.mark.parametrize("shift", [0.0, 1.0, 3.0])
def test_interval_covers_the_population_distance(shift):
    """The truth is known: EMD between the binned populations. 95 % intervals from samples of 60
    images per side must hold it at least 90 % of the time, at D = 0, near the noise and beyond."""
    rng = np.random.default_rng(int(shift * 10))
    mu1 = np.array([20.0, 25.0, 30.0])
    mu2 = mu1 + np.array([shift, -shift, shift / 2])
    truth = population_emd(mu1, mu2, SD)
    hits = 0
    reps = 60
    for r in range(reps):
        res = stats.compare_ci(sample_dna(rng, mu1, 60, "a"), sample_dna(rng, mu2, 60, "b"), permutations=0)
        o = res.overall
        assert o.lo <= o.distance <= o.hi and o.noise_floor >= 0
        hits += o.lo <= truth <= o.hi
    assert hits / reps >= 0.9, (hits, reps, truth)


def test_permutation_test_holds_its_level_with_unequal_sizes():
    """Same distribution, a reference of 200 images against batches of 25: p < alpha no more often
    than alpha (up to sampling error), though the groups' sizes differ eightfold."""
    rng = np.random.default_rng(7)
    mu = np.array([20.0, 30.0])
    ref = sample_dna(rng, mu, 200, "ref")
    ps = [stats.compare_ci(ref, sample_dna(rng, mu, 25, "batch"), permutations=99, seed=s).overall.p_value
          for s in range(80)]
    assert np.mean(np.array(ps) < 0.1) <= 0.1 + 3 * math.sqrt(0.1 * 0.9 / 80)
    shifted = stats.compare_ci(ref, sample_dna(rng, mu + 4, 25, "moved"), permutations=99).overall
    assert shifted.p_value == pytest.approx(0.01) and shifted.lo > 0


def test_exact_permutation_test_enumerates_every_split():
    rng = np.random.default_rng(3)
    a = sample_dna(rng, np.array([15.0]), 30, "a", k=3)
    b = sample_dna(rng, np.array([40.0]), 30, "b", k=3)
    r = stats.compare_ci(a, b, permutations=999)
    assert r.exact and r.permutations == math.comb(6, 3) == 20
    # the observed split and its mirror image (A and B swapped) are the two most extreme of the 20
    assert r.overall.p_value == pytest.approx(2 / 20)
    mc = stats.compare_ci(a, b, permutations=5, seed=1)
    assert not mc.exact and mc.permutations == 5 and mc.overall.p_value == pytest.approx(1 / 6)


def test_permutation_p_and_noise_helpers():
    assert stats.permutation_p(2.0, np.array([1.0, 2.0, 3.0, 0.5]), exact=True) == 0.5
    assert stats.permutation_p(5.0, np.array([1.0, 2.0]), exact=False) == pytest.approx(1 / 3)
    x = np.linspace(0, 10, 11)
    assert (stats.remove_noise("emd", x, 3.0) <= x).all() and stats.remove_noise("emd", 3.0, 3.0) == 0
    assert stats.remove_noise("nfd", 5.0, 2.0) == 3.0
    assert stats.noise_scale("emd", 4, 4) == pytest.approx(math.sqrt(0.5))
    assert stats.noise_scale("nfd", 4, 4) == pytest.approx(0.5)


def test_no_shards_no_interval():
    rng = np.random.default_rng(0)
    a = sample_dna(rng, np.array([20.0]), 20, "a")
    b = sample_dna(rng, np.array([20.0]), 20, "b")
    b.shards = None
    with pytest.raises(stats.NoShardsError, match="'b' keeps no shard DNAs"):
        stats.compare_ci(a, b)
    b = sample_dna(rng, np.array([20.0]), 1, "tiny")
    with pytest.raises(stats.NoIntervalError, match="fewer than two shards"):
        stats.compare_ci(a, b)
    with pytest.raises(ConfigError):
        stats.compare_ci(a, a, level=1.5)


def test_rank_tells_apart_only_what_the_noise_allows():
    rng = np.random.default_rng(11)
    mu = np.array([20.0, 30.0])
    q = sample_dna(rng, mu, 80, "q")
    far = sample_dna(rng, mu + 6, 80, "far")
    near1 = sample_dna(rng, mu + 1.0, 80, "near1")
    near2 = sample_dna(rng, mu + 1.0, 80, "near2")
    rows = stats.rank_ci(q, [("near1", near1), ("near2", near2), ("far", far)])
    assert [r.name for r in rows] == ["near1", "near2", "far"]
    assert rows[1].distinct_from_next is True  # near2 vs far
    assert rows[2].distinct_from_next is None  # the last row has no next
    assert all(r.interval.lo <= r.distance <= r.interval.hi for r in rows)


def test_weights_and_selection_follow_compare():
    """--ignore weights (EMD_W, Eq. 5) and --neuron selections: the interval is for the same
    distance `compare` prints, and holds it."""
    from vdnacli.distances import compare, make_selection

    rng = np.random.default_rng(5)
    a = sample_dna(rng, np.array([20.0, 25.0, 30.0]), 50, "a")
    b = sample_dna(rng, np.array([21.0, 25.0, 36.0]), 50, "b")
    w = {"l0": np.array([0.7, 0.3, 0.0])}  # the third neuron, which moved most, is ignored
    r = stats.compare_ci(a, b, weights=w, permutations=99)
    assert r.overall.distance == pytest.approx(compare(a, b, weights=w).distance)
    assert r.overall.lo <= r.overall.distance <= r.overall.hi
    full = stats.compare_ci(a, b, permutations=0).overall
    assert r.overall.distance < full.distance
    sel = make_selection(a.layers, None, {"l0": [2]})
    one = stats.compare_ci(a, b, selection=sel, permutations=99)
    assert one.overall.distance == pytest.approx(compare(a, b, selection=sel).distance)
    assert one.moved(1)[0][1] == 2 and one.overall.p_value == pytest.approx(0.01)
