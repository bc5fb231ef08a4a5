"""A built extractor: network in eval mode on a device, plus what identifies it."""
from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from vdnacli.errors import ExtractorError
from vdnacli.extractors import weights as weights_mod
from vdnacli.extractors.spec import ExtractorSpec, get_spec
from vdnacli.ranges import ActivationRanges, from_upstream, load_ranges


@dataclass
class Extractor:
    spec: ExtractorSpec
    module: object  # torch.nn.Module: images [B, 3, H, W] -> {layer: [B, C, S]}
    weights_sha256: str | None
    device: object  # torch.device
    offline: bool = False  # fetch nothing (weights, Hub ranges) when True

    def __call__(self, x):
        """{layer: activations [B, C, S]}, contiguous (the counting kernels flatten them)."""
        return {layer: a.contiguous() for layer, a in self.module(x).items()}


def packaged_ranges(spec: ExtractorSpec) -> ActivationRanges | None:
    if not spec.ranges:
        return None
    res = resources.files("vdnacli.extractors").joinpath("ranges", spec.ranges)
    with resources.as_file(res) as p:
        if not Path(p).is_file():
            return None
        return load_ranges(Path(p))


def hub_ranges(spec: ExtractorSpec, offline: bool = False) -> ActivationRanges | None:
    """Upstream's activation_ranges.json from the Hub (cache first), with upstream's margin rule."""
    if spec.ranges_hub is None:
        return None
    path = weights_mod.hub_file(spec.ranges_hub, offline, what=f"activation ranges of '{spec.name}'")
    import json

    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ExtractorError(f"cannot read {path}: {e}") from None
    r = from_upstream(data, extractor=spec.name)
    r.sources = (f"hf://{spec.ranges_hub.repo}/{spec.ranges_hub.filename}",)
    return r


def default_ranges(spec: ExtractorSpec, offline: bool = False) -> ActivationRanges | None:
    """The ranges a histogram DNA uses when none is given: packaged, else upstream's on the Hub."""
    return packaged_ranges(spec) or hub_ranges(spec, offline)


def check_ranges(ranges: ActivationRanges, spec: ExtractorSpec) -> None:
    """Refuse ranges whose layers or neuron counts differ from the extractor's."""
    want, have = dict(spec.layers), ranges.layers()
    if want != have:
        missing = [l for l in want if l not in have]
        extra = [l for l in have if l not in want]
        sized = [l for l in want if l in have and have[l] != want[l]]
        what = "; ".join(p for p in (
            f"missing layers {', '.join(missing[:3])}" if missing else "",
            f"unknown layers {', '.join(extra[:3])}" if extra else "",
            f"wrong neuron counts for {', '.join(sized[:3])}" if sized else "") if p)
        raise ExtractorError(f"these activation ranges do not fit '{spec.name}' ({what})")


def import_ranges(path: Path, extractor: str, out: Path) -> ActivationRanges:
    """Read upstream's activation_ranges.json, a vdna 0.1.1 "activation-ranges" pair, or ours;
    check it against the extractor; save ours."""
    spec = get_spec(extractor)
    if Path(path).suffix == ".npz" or Path(path).with_suffix(".npz").is_file():
        from vdnacli.interop import import_ranges_pair

        r = import_ranges_pair(Path(path), spec.name)
    else:
        r = load_ranges(Path(path))
    check_ranges(r, spec)
    r.extractor = spec.name
    if not r.sources:
        r.sources = (Path(path).name,)
    r.save(Path(out))
    return r


def ranges_status(spec: ExtractorSpec) -> str:
    """'packaged', 'hub' (cached), 'hub (not cached)' or 'none'; never downloads."""
    if spec.ranges and packaged_ranges(spec) is not None:
        return "packaged"
    if spec.ranges_hub is not None:
        cached = weights_mod.hf_cached(spec.ranges_hub.repo, spec.ranges_hub.filename, spec.ranges_hub.revision)
        return "hub" if cached else "hub (not cached)"
    return "none"


def resolve_device(device: str | None):
    import torch

    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ExtractorError(f"invalid device '{device}' (use auto, cpu, cuda or cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ExtractorError(f"device '{device}' requested but no CUDA GPU is available; use --device cpu")
    return dev


def build_module(spec: ExtractorSpec, weights_path: Path | None = None):
    """The network in eval mode without gradients; `weights_path=None` = random (or generated) weights."""
    module = spec.build(spec, weights_path)
    return module.eval().requires_grad_(False)


def load_extractor(name: str, device: str | None = "auto", weights: Path | None = None,
                   offline: bool = False) -> Extractor:
    """Resolve (fetching if allowed) and verify the weights, build the network, move it to `device`."""
    spec = get_spec(name)
    offline = weights_mod.is_offline(offline)
    path, digest = weights_mod.resolve(spec, weights, offline)  # first: a missing file fails fast
    dev = resolve_device(device)
    module = build_module(spec, path)
    if path is None:  # generated weights: check them against the pinned hash
        digest = weights_mod.state_sha256(module)
        if not weights_mod.matches(digest, spec.weights.sha256):
            raise ExtractorError(
                f"the generated weights of '{spec.name}' have sha256 {digest[:12]}…, expected "
                f"{spec.weights.sha256[:12]}…; this platform does not reproduce them (please report it)")
    module.to(dev)
    return Extractor(spec=spec, module=module, weights_sha256=digest, device=dev, offline=offline)


def describe(spec: ExtractorSpec) -> dict:
    """What `vdna extractors` reports; looks only at local files (never downloads)."""
    status = ranges_status(spec)
    return {
        "name": spec.name,
        "architecture": spec.architecture,
        "layers": dict(spec.layers),
        "neurons": spec.neurons,
        "input_size": spec.input_size,
        "mean": list(spec.mean),
        "std": list(spec.std),
        "weights_source": spec.weights.describe(),
        "weights_sha256_pinned": spec.weights.sha256,
        "weights_present": weights_mod.weights_present(spec),
        "ranges": status in ("packaged", "hub"),
        "ranges_source": status,
        "tags": list(spec.tags),
        "upstream": spec.upstream,  # vdna 0.1.1's name for the same network
        "dtype": spec.dtype,
        "description": spec.description,
    }
