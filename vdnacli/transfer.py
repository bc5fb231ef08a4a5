"""Transfer ranking (paper sec. 5.5): rank sources by DNA distance to each target, and
score that ranking against observed transfer results (discrepancy d, Eq. 8; Spearman)."""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vdnacli.catalog import Catalog
from vdnacli.errors import ConfigError, FormatError


def default_layer(catalog: Catalog, name: str) -> str:
    """The paper ranks with the extractor's last layer."""
    return catalog.registry.meta(name)["layers"][-1][0]


def rank(catalog: Catalog, targets: list[str], sources: list[str] | None = None, layers=None,
         metric: str = "emd", neurons=None, weights=None) -> dict[str, list[tuple[str, float]]]:
    if not targets:
        raise ConfigError("give at least one --target")
    out = {}
    for t in targets:
        cand = [s for s in (sources or [n for n in catalog.names() if n not in targets]) if s != t]
        lay = layers or (None if neurons else [default_layer(catalog, t)])
        ranked, _ = catalog.nearest(t, top=len(cand), metric=metric, layers=lay, neurons=neurons,
                                    candidates=cand, weights=weights)
        out[t] = ranked
    return out


def read_reference(path: Path) -> dict[str, dict[str, float]]:
    """CSV `source,<target1>,...`: observed transfer scores (higher is better) -> {target: {source: score}}."""
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


def evaluate(rankings: dict[str, list[tuple[str, float]]], reference: dict[str, dict[str, float]]) -> Evaluation:
    """Eq. 8: mean over targets and ranks of |score(gt rank i) - score(predicted rank i)|.

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
        gt = sorted(names, key=lambda n: -scores[n])
        d = [abs(scores[g] - scores[p]) for g, p in zip(gt, names)]
        dist = {n: v for n, v in ranked}
        # Spearman between predicted closeness (-distance) and observed score.
        rho = _spearman([-dist[n] for n in names], [scores[n] for n in names])
        per_target[t] = {"discrepancy": float(np.mean(d)), "spearman": rho, "sources": len(names)}
        diffs.append(float(np.mean(d)))
        if rho is not None:
            all_rho.append(rho)
    return Evaluation(
        discrepancy=float(np.mean(diffs)) if diffs else None,
        spearman=float(np.mean(all_rho)) if all_rho else None,
        per_target=per_target,
    )
