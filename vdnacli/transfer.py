"""Transfer ranking (paper sec. 5.5): rank sources by DNA distance to each target, and
score that ranking against observed transfer results (discrepancy d, Eq. 8; Spearman)."""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vdnacli.catalog import Catalog
from vdnacli.errors import ConfigError, FormatError, IncompatibleDNAError, NotFoundError, did_you_mean, not_found


def default_layer(catalog: Catalog, name: str) -> str:
    """The paper ranks with the extractor's last layer."""
    return catalog.registry.meta(name)["layers"][-1][0]


_SEE = "see 'vdna list'"


def _no_entry(where: str, name: str, names: list[str]) -> NotFoundError:
    return NotFoundError(f"{where}: {not_found('entry', name, names, see=_SEE)}")


def check_names(given: list[str], names: list[str], flag: str) -> None:
    """Every name given to `flag` is an entry; else one error naming the closest ones."""
    for n in given:
        if n not in names:
            raise _no_entry(flag, n, names)


def rank(catalog: Catalog, targets: list[str], sources: list[str] | None = None, layers=None,
         metric: str = "emd", neurons=None, weights=None,
         skipped: dict[str, list[str]] | None = None) -> dict[str, list[tuple[str, float]]]:
    """{target: [(source, distance), ...] closest first}. Every name must be an entry; sources
    given by name must all be comparable with the target (an error otherwise), while of the
    default candidates (every other entry) the incomparable ones are left out and listed in
    `skipped[target]`."""
    if not targets:
        raise ConfigError("give at least one --target")
    names = catalog.names()
    check_names(targets, names, "--target")
    if sources is not None:
        check_names(sources, names, "--sources")
    out = {}
    for t in targets:
        cand = [s for s in (sources if sources is not None else [n for n in names if n not in targets]) if s != t]
        if not cand:
            raise ConfigError(f"no candidate source for '{t}': " + ("--sources names only the target itself"
                              if sources else "the registry holds nothing else; add sources or give --sources"))
        lay = layers or (None if neurons else [default_layer(catalog, t)])
        ranked, left_out = catalog.nearest(t, top=len(cand), metric=metric, layers=lay, neurons=neurons,
                                           candidates=cand, weights=weights)
        if left_out and sources is not None:
            raise IncompatibleDNAError(f"--sources {', '.join(repr(n) for n in left_out[:5])} cannot be compared with "
                                       f"'{t}' (another extractor, bins or kind); see 'vdna show'")
        if skipped is not None and left_out:
            skipped[t] = list(left_out)
        out[t] = ranked
    return out


def check_reference(reference: dict[str, dict[str, float]], rankings: dict[str, list[tuple[str, float]]],
                    names: list[str], label: str) -> None:
    """Refuse a reference that would be silently ignored in part: a column or row naming no
    entry, a target without a column, or a target none of whose ranked sources has a score."""
    for t, ranked in rankings.items():
        if t not in reference:
            raise NotFoundError(f"{label} has no column for target '{t}'"
                                + (did_you_mean(t, list(reference)) or f" (its columns: {', '.join(reference)})"))
    for column in reference:
        if column not in names:
            raise _no_entry(f"{label}, column '{column}'", column, names)
    for row in sorted({s for scores in reference.values() for s in scores}):
        if row not in names:
            raise _no_entry(f"{label}, row '{row}'", row, names)
        if not any(n in reference[t] for n, _ in ranked):
            raise ConfigError(f"{label}: column '{t}' has no score for any ranked source "
                              f"({', '.join(n for n, _ in ranked[:5])}); nothing to evaluate")



def read_reference(path: Path) -> dict[str, dict[str, float]]:
    """CSV `source,<target1>,...`: observed transfer scores -> {target: {source: score}}. Which
    direction is better is the caller's to say (`evaluate(higher_is_better=...)`)."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
    except OSError as e:
        raise FormatError(f"cannot read reference {path}: {e.strerror}") from None
    if len(rows) < 2 or not rows[0] or rows[0][0].strip().lower() != "source":
        raise FormatError(f"{path}: expected a header 'source,<target1>,...' and one row per source")
    targets = [t.strip() for t in rows[0][1:]]
    ref: dict[str, dict[str, float]] = {t: {} for t in targets}
    for row in rows[1:]:
        if not row or not row[0].strip():
            continue
        for t, cell in zip(targets, row[1:]):
            if cell.strip() == "":
                continue
            try:
                ref[t][row[0].strip()] = float(cell)
            except ValueError:
                raise FormatError(f"{path}: cell {cell!r} for source {row[0]!r} is not a number") from None
    return ref


def _spearman(x: list[float], y: list[float]) -> float | None:
    if len(x) < 2:
        return None
    rx = _ranks(np.asarray(x))
    ry = _ranks(np.asarray(y))
    if rx.std() == 0 or ry.std() == 0:
        return None
    return float(np.corrcoef(rx, ry)[0, 1])


def _ranks(a: np.ndarray) -> np.ndarray:
    """Average ranks (ties share their mean rank), as scipy.stats.rankdata."""
    order = np.argsort(a, kind="mergesort")
    ranks = np.empty(len(a))
    sa = a[order]
    i = 0
    while i < len(a):
        j = i
        while j + 1 < len(a) and sa[j + 1] == sa[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


@dataclass
class Evaluation:
    discrepancy: float | None
    spearman: float | None
    per_target: dict[str, dict]


def evaluate(rankings: dict[str, list[tuple[str, float]]], reference: dict[str, dict[str, float]],
             higher_is_better: bool = True) -> Evaluation:
    """Eq. 8: mean over targets and ranks of |score(gt rank i) - score(predicted rank i)|.

    The ground-truth ranking puts the best observed score first: the highest by default (accuracy,
    mIoU), the lowest with `higher_is_better=False` (error rates, losses); Spearman's rho is then
    taken against the goodness (the score, or its negative), so a perfect ranking is +1 either way.

    Each target weighs the same, as Eq. 8's 1/|V| reads: the mean over ranks is taken per
    target first, then over targets (a target with missing cells in the reference has fewer
    ranks, not less weight)."""
    per_target, diffs, all_rho = {}, [], []
    for t, ranked in rankings.items():
        scores = reference.get(t)
        if not scores:
            continue
        names = [n for n, _ in ranked if n in scores]
        if not names:
            continue
        sign = 1.0 if higher_is_better else -1.0
        gt = sorted(names, key=lambda n: -sign * scores[n])
        d = [abs(scores[g] - scores[p]) for g, p in zip(gt, names)]
        dist = {n: v for n, v in ranked}
        # Spearman between predicted closeness (-distance) and observed goodness.
        rho = _spearman([-dist[n] for n in names], [sign * scores[n] for n in names])
        per_target[t] = {"discrepancy": float(np.mean(d)), "spearman": rho, "sources": len(names)}
        diffs.append(float(np.mean(d)))
        if rho is not None:
            all_rho.append(rho)
    return Evaluation(
        discrepancy=float(np.mean(diffs)) if diffs else None,
        spearman=float(np.mean(all_rho)) if all_rho else None,
        per_target=per_target,
    )
