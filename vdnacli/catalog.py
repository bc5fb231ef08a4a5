"""The catalog: DNAs stored by name in a registry, and the questions asked of them."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from registry import Registry, RegistryError, validate_name
from vdnacli import dna as dna_mod
from vdnacli import shards as shards_mod
from vdnacli.distances import METRICS, Comparison, compare, make_selection
from vdnacli.dna import DNA
from vdnacli.errors import FormatError, IncompatibleDNAError, not_found
from vdnacli.integrity import meta_problem, refuse_insane
from vdnacli.sketch import sketch_dna_hist


def missing_kind(name: str, held: list[str], kind: str) -> IncompatibleDNAError:
    """"'a' holds hist, not gauss: ..." naming the metric that needs it and the ones that fit."""
    needs = [m for m, k in METRICS.items() if k == kind]
    fits = [m for m, k in METRICS.items() if k in held]
    what = f"--metric {' / '.join(needs)} needs" if needs else "this needs"
    instead = f"use --metric {' or '.join(fits)}, or " if fits else ""
    return IncompatibleDNAError(f"'{name}' holds {', '.join(held) or 'no distributions'}, not {kind} ({what} {kind}): "
                                f"{instead}recompute it with 'vdna add {name} SOURCE --kind {','.join(held + [kind])} "
                                f"--replace'")


@dataclass
class EntrySummary:
    name: str
    extractor: str | None
    kinds: list[str]
    num_images: int | None
    bins: int | None
    created: str | None
    size_bytes: int
    source: str | None
    problem: str | None = None

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class Catalog:
    def __init__(self, root: str | os.PathLike):
        self.registry = Registry(root)
        self._masks: Registry | None = None

    @property
    def masks(self) -> Registry:
        """Masks live in their own namespace, <registry>/masks, with the same storage guarantees."""
        if self._masks is None:
            self._masks = Registry(self.registry.root / "masks")
        return self._masks

    def put_mask(self, name: str, mask, replace: bool = False) -> None:
        meta, arrays = mask.to_entry()
        meta["name"] = name
        self.masks.put(name, meta, arrays, replace=replace)

    def _mask_exists(self, name: str) -> None:
        if name not in self.masks:
            raise not_found("mask", name, self.masks.names(), see="see 'vdna mask list'")

    def get_mask(self, name: str):
        from vdnacli.masks import Mask

        self._mask_exists(name)
        meta, arrays = self.masks.read(name)
        return Mask.from_entry(meta, arrays)

    def mask_meta(self, name: str) -> dict:
        self._mask_exists(name)
        return self.masks.meta(name)

    def remove_mask(self, name: str) -> None:
        self._mask_exists(name)
        self.masks.remove(name)

    @property
    def root(self) -> Path:
        return self.registry.root

    # -- storage ---------------------------------------------------------------------
    def put(self, name: str, dna: DNA, replace: bool = False, expect=False) -> None:
        """Store a DNA; `expect` (a registry.stamp(name) taken before reading it) refuses the
        write if another process changed the entry meanwhile (read-modify-write, --append)."""
        validate_name(name)
        dna.meta["name"] = name
        refuse_insane(dna.meta, {f"hist/{l}": h for l, h in (dna.hist or {}).items()}, f"DNA '{name}'")
        meta, arrays = self.entry(dna)
        self.registry.put(name, meta, arrays, replace=replace, expect=expect)

    @staticmethod
    def entry(dna: DNA) -> tuple[dict, dict]:
        """(meta, arrays) as the registry stores a DNA: its arrays plus the nearest-search sketch
        (for group commits through `registry.put_many`, e.g. a pull)."""
        if dna.shards is not None:  # the record always says what the entry keeps
            dna.meta["shards"] = dna.shards.record()
        else:
            dna.meta.pop("shards", None)
        arrays = dna_mod.to_arrays(dna)
        if dna.hist is not None and (dna.meta.get("bins") or 0) <= 65535:
            arrays["sketch/mean"], arrays["sketch/quantiles"] = sketch_dna_hist(dna.hist)
        return dna.meta, arrays

    def add(self, name: str, images, replace: bool = False, **compute_kwargs) -> DNA:
        """Compute the DNA of `images` (anything vdnacli.compute takes) and store it as `name`.

        Refuses an existing name unless `replace`; keyword arguments go to vdnacli.compute."""
        from vdnacli.api import compute

        validate_name(name)
        if not replace and name in self.registry:
            from registry import EntryExistsError

            raise EntryExistsError(name)
        dna = compute(images, name=name, **compute_kwargs)
        self.put(name, dna, replace=replace)
        return dna

    def get(self, name: str, kinds: list[str] | None = None, layers: list[str] | None = None,
            shards: bool = False) -> DNA:
        """Load a DNA; `kinds` and `layers` restrict which arrays are read (faster for big entries);
        `shards` also reads its shard DNAs (K times the DNA's size; only the statistics need them)."""
        meta = self.registry.meta(name)
        if (bad := meta_problem(meta)) is not None:  # a forged or foreign entry: one clear error
            raise FormatError(f"entry '{name}': {bad}; run 'vdna verify'")
        keys = None
        if kinds is not None or layers is not None:
            kinds = kinds if kinds is not None else list(meta.get("kinds", []))
            missing = [k for k in kinds if k not in meta.get("kinds", [])]
            if missing:
                raise missing_kind(name, list(meta.get("kinds", [])), missing[0])
            keys = []
            have = [k for k in meta.get("kinds", []) if k in kinds]
            chosen = [layer for layer, _ in meta.get("layers", []) if layers is None or layer in layers]
            for layer in chosen:
                if "hist" in have:
                    keys.append(f"hist/{layer}")
                if "gauss" in have:
                    keys += [f"gauss/{layer}/{p}" for p in ("count", "sum", "sumsq")]
                if "layer-gauss" in have:
                    keys += [f"layer_gauss/{layer}/{p}" for p in ("count", "sum", "outer")]
            if shards and shards_mod.count_of(meta):
                keys += shards_mod.keys(meta, have, chosen)
            meta = dict(meta, kinds=have)
        _, arrays = self.registry.read(name, keys=keys, skip=() if shards else (shards_mod.PREFIX,))
        d = dna_mod.from_arrays(meta, arrays, only_layers=layers)
        d.meta["name"] = name
        return d

    def settings(self, name: str):
        """(ComputeSettings, ActivationRanges or None) an entry records: what `--like` reuses.
        Reads the metadata and the kept ranges only, not the distributions."""
        from vdnacli.settings import ComputeSettings

        meta = self.registry.meta(name)
        if (bad := meta_problem(meta)) is not None:
            raise FormatError(f"entry '{name}': {bad}; run 'vdna verify'")
        ranges = None
        if isinstance(meta.get("ranges"), dict) and "hist" in meta.get("kinds", []):
            layers = {str(l): int(n) for l, n in meta.get("layers", [])}
            keys = [f"ranges/{l}/{m}" for l in layers for m in ("min", "max")]
            _, arrays = self.registry.read(name, keys=keys)
            ranges = dna_mod._ranges_from_arrays(meta, arrays, layers)
        return ComputeSettings.from_meta(dict(meta, name=name), like=name), ranges

    def thumbnails(self, name: str):
        """The thumbnails kept with an entry (vdnacli.thumbnails.Thumbnails), None if it keeps none;
        reads only those arrays."""
        from vdnacli.thumbnails import KEYS, Thumbnails

        stored = set(self.registry.keys(name))
        present = [k for k in KEYS if k in stored]
        if not present:
            return None
        _, arrays = self.registry.read(name, keys=present)
        return Thumbnails.from_arrays(arrays)  # an incomplete group is refused there

    def names(self) -> list[str]:
        return self.registry.names()

    def remove(self, name: str) -> None:
        self.registry.remove(name)

    def summaries(self) -> list[EntrySummary]:
        out = []
        for name, meta, problem in self.registry.iter_meta():
            meta = meta or {}
            out.append(
                EntrySummary(
                    name=name,
                    extractor=meta.get("extractor"),
                    kinds=list(meta.get("kinds", [])),
                    num_images=meta.get("num_images"),
                    bins=meta.get("bins"),
                    created=meta.get("created"),
                    size_bytes=self.registry.file_size(name),
                    source=(meta.get("origin") or {}).get("kind"),
                    problem=problem,
                )
            )
        return out

    # -- questions ---------------------------------------------------------------------
    # Each question takes entry names or DNAs held in memory (a one-off comparison, vdnacli.oneoff).
    def load(self, what: str | DNA, kinds: list[str] | None = None, shards: bool = False) -> DNA:
        """`what` itself when it is a DNA, else the entry of that name (see `get`)."""
        return what if isinstance(what, DNA) else self.get(what, kinds, shards=shards)

    def compare(self, a: str | DNA, b: str | DNA, metric: str = "emd", layers=None, neurons=None,
                weights=None) -> Comparison:
        kind = METRICS.get(metric, "hist")
        da, db = self.load(a, [kind]), self.load(b, [kind])
        sel = make_selection(da.layers, layers, neurons)
        return compare(da, db, metric, sel, weights)

    def compare_ci(self, a: str, b: str, metric: str = "emd", layers=None, neurons=None, weights=None,
                   permutations: int | None = None, seed: int = 0):
        """(Comparison, CompareCI or None, note): the distance with its uncertainty from both
        entries' shards (vdnacli.stats); with an unsharded side, None and a note saying why no
        interval can be given."""
        from vdnacli import stats

        kind = METRICS.get(metric, "hist")
        da, db = self.load(a, [kind], shards=True), self.load(b, [kind], shards=True)
        sel = make_selection(da.layers, layers, neurons)
        plain = compare(da, db, metric, sel, weights)
        try:
            ci = stats.compare_ci(da, db, metric, sel, weights, stats.PERMUTATIONS if permutations is None
                                  else permutations, seed, plain=plain)
        except stats.NoIntervalError as e:
            return plain, None, str(e)
        return plain, ci, None

    def rank_ci(self, name: str, ranked: list[tuple[str, float]], metric: str = "emd", layers=None, neurons=None,
                weights=None, seed: int = 0):
        """Intervals for rows of a ranking against `name`, and which rows can be told apart
        from the next (vdnacli.stats.rank_ci)."""
        from vdnacli import stats

        kind = METRICS.get(metric, "hist")
        query = self.load(name, [kind], shards=True)
        sel = make_selection(query.layers, layers, neurons)
        others = [(n, self.get(n, [kind], shards=True)) for n, _ in ranked]
        if query.shards is None:
            label = query.meta.get("name", "the query") if isinstance(name, DNA) else name
            rows = [stats.RankedRow(n, d, None, None, str(stats.NoShardsError(label))) for n, d in ranked]
            return rows
        return stats.rank_ci(query, others, metric, sel, weights, seed=seed)

    def nearest(self, name: str, top: int = 5, metric: str = "emd", layers=None, neurons=None,
                candidates: list[str] | None = None, exact: bool = False, stats: dict | None = None,
                weights=None) -> tuple[list[tuple[str, float]], list[str]]:
        """The `top` closest entries (ascending) and the names skipped as incomparable.

        EMD queries go through the sketch index (exact top K, see `vdnacli.search`);
        `exact=True` or another metric compares against every entry. `name` may be a DNA held
        in memory (not an entry): every entry is then a candidate.
        """
        if metric == "emd" and not exact:
            from vdnacli.search import sketch_nearest

            return sketch_nearest(self, name, top, layers, neurons, candidates, stats, weights)
        return self.brute_nearest(name, top, metric, layers, neurons, candidates, weights)

    def brute_nearest(self, name: str, top: int = 5, metric: str = "emd", layers=None, neurons=None,
                      candidates: list[str] | None = None, weights=None) -> tuple[list[tuple[str, float]], list[str]]:
        kind = METRICS.get(metric, "hist")
        query = self.load(name, [kind])
        sel = make_selection(query.layers, layers, neurons)
        if metric == "emd":  # the query's side computed once; each entry read as stored
            from vdnacli.search import ExactEMD

            query.require("hist")
            exact = ExactEMD(self, query, sel, weights)

            def distance(other):
                return exact.distance(other)
        else:
            def distance(other):
                return compare(query, self.get(other, [kind]), metric, sel, weights).distance
        results, skipped = [], []
        for other in candidates if candidates is not None else self.names():
            if other == name:
                continue
            try:
                d = distance(other)
            except (IncompatibleDNAError, FormatError, RegistryError):
                skipped.append(other)
                continue
            results.append((other, d))
        results.sort(key=lambda r: (r[1], r[0]))
        return results[: max(top, 0)], skipped

    def matrix(self, names: list[str], metric: str = "emd", layers=None, neurons=None, weights=None,
               workers: int | None = None, progress=None) -> np.ndarray:
        """Pairwise distances; each value is `compare`'s. EMD goes through the blocked,
        threaded `vdnacli.emd_matrix` (each entry's CDF computed once per block, not per pair).
        `progress(pairs done, pairs in all)` is called as the work goes."""
        if metric == "emd":
            from vdnacli.emd_matrix import emd_matrix

            return emd_matrix(self, names, layers, neurons, weights, workers=workers, progress=progress)
        kind = METRICS.get(metric, "hist")
        dnas = [self.get(n, [kind]) for n in names]
        sel = make_selection(dnas[0].layers, layers, neurons) if dnas else None
        m = np.zeros((len(names), len(names)))
        total, done = len(names) * (len(names) - 1) // 2, 0
        if progress is not None:
            progress(0, total)
        for i in range(len(names)):
            for j in range(i + 1, len(names)):
                m[i, j] = m[j, i] = compare(dnas[i], dnas[j], metric, sel, weights).distance
            done += len(names) - 1 - i
            if progress is not None:
                progress(done, total)
        return m
