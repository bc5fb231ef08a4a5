"""Attribute-aware comparisons (paper sec. 5.3-5.4, A.4-A.5).

A mask belongs to one extractor (name, weights, layers) and holds one non-negative
weight per neuron:
  focus  (`mask create`): 1 on the K neurons most sensitive to an attribute, 0 elsewhere;
         comparisons average the EMD over those neurons only.
  ignore (`mask learn`):  weights W learned so that EMD_W (Eq. 5) ignores an attribute
         (Delta_a -> 1, Eq. 6) while keeping the others (|Delta_b| -> 0), loss Eq. 7.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np

from vdnacli import __version__
from vdnacli.distances import METRICS, neuron_distances, unknown_layer
from vdnacli.dna import DNA, merge
from vdnacli.errors import ConfigError, IncompatibleDNAError, VdnaError

KINDS = ("focus", "ignore")


class MaskError(VdnaError):
    pass


@dataclass
class Mask:
    kind: str
    extractor: str
    weights_sha256: str | None
    layers: dict[str, int]
    weights: dict[str, np.ndarray]  # layer -> float64 [n], non-negative
    info: dict = field(default_factory=dict)

    @property
    def selected(self) -> dict[str, np.ndarray]:
        """Neurons with a non-zero weight, per layer."""
        return {l: np.flatnonzero(w > 0) for l, w in self.weights.items() if (w > 0).any()}

    def check(self, dna_meta: dict) -> None:
        """Refuse a mask made for another network."""
        if dna_meta.get("extractor") != self.extractor or (
            self.weights_sha256 and dna_meta.get("weights_sha256") and dna_meta["weights_sha256"] != self.weights_sha256
        ) or [tuple(x) for x in dna_meta.get("layers", [])] != list(self.layers.items()):
            raise IncompatibleDNAError(
                f"mask is for extractor '{self.extractor}', the DNA '{dna_meta.get('name', '?')}' "
                f"uses '{dna_meta.get('extractor')}'; create the mask from DNAs of the same extractor"
            )

    def focus(self, only_layers=None) -> tuple[list[str] | None, dict | None, dict | None]:
        """(layers, neurons, weights) arguments for the catalog's comparisons."""
        if self.kind == "focus":
            neurons = {l: idx for l, idx in self.selected.items() if not only_layers or l in only_layers}
            if not neurons:
                raise ConfigError("the mask selects no neuron in the chosen layers")
            return None, neurons, None
        layers = list(only_layers) if only_layers else list(self.layers)
        return layers, None, {l: self.weights[l] for l in layers}

    # -- storage (registry entries of the masks namespace) --------------------------
    def to_entry(self) -> tuple[dict, dict]:
        meta = {
            "format": "vdna-mask",
            "format_version": 1,
            "kind": self.kind,
            "extractor": self.extractor,
            "weights_sha256": self.weights_sha256,
            "layers": [[l, int(n)] for l, n in self.layers.items()],
            "neurons_selected": int(sum(int((w > 0).sum()) for w in self.weights.values())),
            "tool_version": __version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **self.info,
        }
        return meta, {f"weights/{l}": np.asarray(w, dtype=np.float64) for l, w in self.weights.items()}

    @classmethod
    def from_entry(cls, meta: dict, arrays: dict) -> "Mask":
        try:
            layers = {str(l): int(n) for l, n in meta["layers"]}
            weights = {l: np.asarray(arrays[f"weights/{l}"], dtype=np.float64) for l in layers}
            kind = meta["kind"]
        except (KeyError, TypeError, ValueError):
            raise MaskError("malformed mask entry (layers, kind or weights missing)") from None
        for l, w in weights.items():
            if w.shape != (layers[l],) or not np.isfinite(w).all() or (w < 0).any():
                raise MaskError(f"mask weights of layer {l!r} are malformed")
        info = {k: v for k, v in meta.items() if k not in ("format", "format_version", "kind", "extractor",
                                                           "weights_sha256", "layers", "neurons_selected")}
        return cls(kind=kind, extractor=meta["extractor"], weights_sha256=meta.get("weights_sha256"),
                   layers=layers, weights=weights, info=info)


def _combined(dnas: list[DNA], side: str) -> DNA:
    if not dnas:
        raise ConfigError(f"the {side} side is empty: give at least one DNA")
    return dnas[0] if len(dnas) == 1 else merge(dnas)


def sensitivity(with_dnas: list[DNA], without_dnas: list[DNA], metric: str = "emd") -> dict[str, np.ndarray]:
    """Neuron-wise distance between the summed 'with' and 'without' DNAs (A.5)."""
    a, b = _combined(with_dnas, "--with"), _combined(without_dnas, "--without")
    return neuron_distances(a, b, metric)


def create_focus_mask(with_dnas: list[DNA], without_dnas: list[DNA], top: int, metric: str = "emd",
                      only_layers=None) -> Mask:
    sens = sensitivity(with_dnas, without_dnas, metric)
    layers = with_dnas[0].layers
    pool = [l for l in layers if not only_layers or l in only_layers]
    for l in only_layers or []:
        if l not in layers:
            raise unknown_layer(l, layers)
    total = sum(layers[l] for l in pool)
    if not 1 <= top <= total:
        raise ConfigError(f"--top must be between 1 and {total} (neurons available)")
    flat = np.concatenate([sens[l] for l in pool])
    owner = np.concatenate([[i] * layers[l] for i, l in enumerate(pool)]).astype(int)
    local = np.concatenate([np.arange(layers[l]) for l in pool])
    best = np.argsort(-flat, kind="stable")[:top]
    weights = {l: np.zeros(n) for l, n in layers.items()}
    for j in best:
        weights[pool[owner[j]]][local[j]] = 1.0
    d0 = with_dnas[0]
    top_rows = [{"layer": pool[owner[j]], "neuron": int(local[j]), "sensitivity": float(flat[j])} for j in best[:20]]
    return Mask(kind="focus", extractor=d0.meta["extractor"], weights_sha256=d0.meta.get("weights_sha256"),
                layers=dict(layers), weights=weights,
                info={"metric": metric, "top": top, "most_sensitive": top_rows})


# -- learned ignore-weights (Eq. 6-7, A.4) ------------------------------------------------
@dataclass
class LearnReport:
    steps: int
    best_step: int
    delta_a: float  # held-out, Eq. 6 (1 = attribute fully ignored)
    mean_abs_delta_b: float  # held-out, other attributes (0 = unchanged)
    train_loss: float
    heldout_loss: float
    pairs: dict[str, dict[str, int]]


def _split(pairs: dict[str, list], holdout: float, seed: int):
    rng = np.random.default_rng(seed)
    train, held = {}, {}
    for attr, items in pairs.items():
        if len(items) < 2:
            raise ConfigError(f"attribute '{attr}' has {len(items)} pair(s); at least 2 are needed "
                              "(one to learn from, one held out)")
        order = rng.permutation(len(items))
        k = min(len(items) - 1, max(1, int(round(holdout * len(items)))))
        held[attr] = [items[i] for i in order[:k]]
        train[attr] = [items[i] for i in order[k:]]
    return train, held


def learn_ignore_weights(pair_distances: dict[str, list[np.ndarray]], ignore: str, lr: float = 1e-5,
                         patience: int = 50, max_steps: int = 20000, holdout: float = 0.25, seed: int = 0,
                         device: str = "cpu") -> tuple[np.ndarray, LearnReport]:
    """Learn non-negative W over N neurons from per-pair neuron-wise distances [N].

    `pair_distances[attr]` holds one vector per (with, without) pair of that attribute.
    Adam (lr 1e-5, betas 0.9/0.999), W initialised to 1/N, early stopping on the
    held-out loss after `patience` steps without improvement (paper A.4).
    """
    import torch

    if ignore not in pair_distances:
        raise ConfigError(f"no pairs given for the attribute to ignore ('{ignore}')")
    if len(pair_distances) < 2:
        raise ConfigError("give pairs of at least one other attribute to keep (the loss needs |Delta_b|)")
    train, held = _split(pair_distances, holdout, seed)

    def stack(groups):
        rows, is_a, attr_id = [], [], []
        names = sorted(groups)
        for i, attr in enumerate(names):
            for d in groups[attr]:
                rows.append(np.asarray(d, dtype=np.float64))
                is_a.append(attr == ignore)
                attr_id.append(i)
        e = torch.tensor(np.stack(rows), device=device)
        return e, torch.tensor(is_a, device=device), torch.tensor(attr_id, device=device), len(names)

    def deltas(w, e):
        return 1.0 - (e @ w) / e.mean(dim=1).clamp_min(1e-12)

    def loss_of(w, pack):
        e, is_a, attr_id, n_attr = pack
        d = deltas(w, e)
        la = (1.0 - d[is_a]).abs().mean()
        # mean over the other attributes of their mean |Delta_b| (Eq. 7's 1/(|A|-1) sum)
        others = []
        for i in torch.unique(attr_id[~is_a]):
            others.append(d[(attr_id == i) & ~is_a].abs().mean())
        lb = torch.stack(others).mean()
        return la + lb, d

    tr, he = stack(train), stack(held)
    n = tr[0].shape[1]
    w = torch.full((n,), 1.0 / n, dtype=torch.float64, device=device, requires_grad=True)
    opt = torch.optim.Adam([w], lr=lr, betas=(0.9, 0.999))
    best = (float("inf"), 0, w.detach().clone())
    step = 0
    for step in range(1, max_steps + 1):
        opt.zero_grad()
        loss, _ = loss_of(w, tr)
        loss.backward()
        opt.step()
        with torch.no_grad():
            w.clamp_(min=0.0)
            hl, _ = loss_of(w, he)
        if hl.item() < best[0] - 1e-12:
            best = (hl.item(), step, w.detach().clone())
        elif step - best[1] >= patience:
            break
    wbest = best[2]
    with torch.no_grad():
        hl, d = loss_of(wbest, he)
        tl, _ = loss_of(wbest, tr)
        e, is_a, attr_id, _ = he
        delta_a = float(d[is_a].mean())
        mean_b = float(d[~is_a].abs().mean())
    report = LearnReport(steps=step, best_step=best[1], delta_a=delta_a, mean_abs_delta_b=mean_b,
                         train_loss=float(tl), heldout_loss=float(hl),
                         pairs={a: {"train": len(train[a]), "heldout": len(held[a])} for a in pair_distances})
    return wbest.cpu().numpy(), report


def learn_ignore_mask(pairs: dict[str, list[tuple[DNA, DNA]]], ignore: str, metric: str = "emd", **kw) -> tuple[Mask, LearnReport]:
    """Learn an ignore-mask from labelled (with, without) DNA pairs of several attributes."""
    if metric not in METRICS:
        raise ConfigError(f"unknown metric '{metric}'")
    first = next(iter(pairs.values()))[0][0]
    layers = first.layers
    dist = {}
    for attr, items in pairs.items():
        dist[attr] = []
        for a, b in items:
            per = neuron_distances(a, b, metric)
            dist[attr].append(np.concatenate([per[l] for l in layers]))
    w, report = learn_ignore_weights(dist, ignore, **kw)
    offsets = np.cumsum([0] + list(layers.values()))
    weights = {l: w[offsets[i]: offsets[i + 1]] for i, l in enumerate(layers)}
    mask = Mask(kind="ignore", extractor=first.meta["extractor"], weights_sha256=first.meta.get("weights_sha256"),
                layers=dict(layers), weights=weights,
                info={"metric": metric, "ignore": ignore, "attributes": sorted(pairs),
                      "evaluation": {"delta_a": report.delta_a, "mean_abs_delta_b": report.mean_abs_delta_b,
                                     "steps": report.steps, "best_step": report.best_step, "pairs": report.pairs}})
    return mask, report
