"""Any timm model as an extractor: `timm:<model_name>` (optionally `timm:<model>.<pretrained tag>`).

Default layers: the model's own `feature_info`, i.e. exactly what timm's
`forward_intermediates` returns: for CNNs the stem and the output of each stage, for ViTs
the output of every block (patch tokens as a grid, prefix tokens left out). Layer names are
timm's module names with "." -> "_" (e.g. layer1, stages_2, blocks_11).
Input size, mean and std come from the model's pretrained config; images are still centre
cropped and resized with the antialiased bicubic filter (timm's crop_pct is not used).
Weights: the pretrained config's Hub repo (timm's own cache), else its URL (torch.hub cache).
"""
from __future__ import annotations

import difflib

from vdnacli.errors import ExtractorError, UnknownExtractorError
from vdnacli.extractors.spec import ExtractorSpec, WeightsSource, register_factory

PREFIX = "timm:"
TIMM_FILES = ("model.safetensors", "pytorch_model.bin")


def _unknown(model_name: str) -> ExtractorError:
    import timm

    close = difflib.get_close_matches(model_name.split(".")[0], timm.list_models(), n=1)
    hint = f" Did you mean 'timm:{close[0]}'?" if close else ""
    return UnknownExtractorError(f"unknown timm model '{model_name}'.{hint} "
                          "List them with: python -c 'import timm; print(timm.list_pretrained())'")


def _create(model_name: str, meta: bool):
    """Build with random weights; on the 'meta' device (no memory, no init) when only shapes are needed."""
    import timm
    import torch

    if meta:
        try:
            with torch.device("meta"):
                return timm.create_model(model_name, pretrained=False)
        except Exception as e:  # noqa: BLE001  (some models cannot be built on 'meta': build normally)
            if "Unknown model" in str(e):
                raise _unknown(model_name) from None
    try:
        return timm.create_model(model_name, pretrained=False)
    except Exception as e:  # noqa: BLE001
        if "Unknown model" in str(e):
            raise _unknown(model_name) from None
        raise ExtractorError(f"cannot build timm model '{model_name}': {type(e).__name__}: {e}") from None


def _layer_names(info) -> tuple[str, ...]:
    names = []
    for d in info:
        base = str(d["module"]).replace(".", "_") or "stem"
        name, k = base, 1
        while name in names:
            k += 1
            name = f"{base}_{k}"
        names.append(name)
    return tuple(names)


def _weights(model_name: str, cfg: dict) -> WeightsSource:
    hub = cfg.get("hf_hub_id")
    if hub:
        files = (cfg["hf_hub_filename"],) if cfg.get("hf_hub_filename") else TIMM_FILES
        return WeightsSource(kind="hf", location=hub, filenames=files,
                             install_hint=f"hf download {hub} {files[0]}")
    if cfg.get("url"):
        return WeightsSource(kind="url", location=cfg["url"], install_hint="download the URL into torch.hub's cache")
    raise ExtractorError(f"timm model '{model_name}' has no pretrained weights in timm; pick a name with a "
                         "pretrained tag (timm.list_pretrained()), or another extractor")


def build(spec: ExtractorSpec, weights_path):
    import sys

    from torch import nn

    from vdnacli.extractors.weights import load_into, load_state_dict

    model_name = spec.name[len(PREFIX):]
    model = _create(model_name, meta=False)
    if weights_path is not None:
        state = load_state_dict(weights_path)
        convert = getattr(sys.modules[type(model).__module__], "checkpoint_filter_fn", None)
        if convert is not None:
            try:
                state = convert(state, model)
            except Exception as e:  # noqa: BLE001  (a converter that does not apply to this file)
                raise ExtractorError(f"weights do not fit {spec.name}: {type(e).__name__}: {e}") from None
        load_into(model, state, spec.name)
    names = [n for n, _ in spec.layers]

    class TimmIntermediates(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, x):
            feats = self.model.forward_intermediates(x, intermediates_only=True)
            if len(feats) != len(names):
                raise ExtractorError(f"{spec.name}: forward_intermediates gave {len(feats)} outputs, "
                                     f"expected {len(names)}")
            return {n: f.flatten(2) if f.ndim == 4 else f.transpose(1, 2) for n, f in zip(names, feats)}

    return TimmIntermediates()


def make_spec(name: str) -> ExtractorSpec:
    model_name = name[len(PREFIX):].strip()
    if not model_name:
        raise ExtractorError("give a timm model name after 'timm:', e.g. timm:resnet50.a1_in1k")
    model = _create(model_name, meta=True)
    if not hasattr(model, "forward_intermediates") or not getattr(model, "feature_info", None):
        raise ExtractorError(f"timm model '{model_name}' does not expose forward_intermediates/feature_info; "
                             "pick another model")
    info = list(model.feature_info)
    cfg = dict(model.pretrained_cfg or {})
    size = int(cfg.get("input_size", (3, 224, 224))[-1])
    mean = tuple(float(v) for v in cfg.get("mean", (0.485, 0.456, 0.406)))
    std = tuple(float(v) for v in cfg.get("std", (0.229, 0.224, 0.225)))
    return ExtractorSpec(
        name=f"{PREFIX}{model_name}",
        architecture=f"timm {cfg.get('architecture', model_name)}" + (f".{cfg['tag']}" if cfg.get("tag") else ""),
        description="timm model: feature_info layers (stem/stages for CNNs, every block for ViTs)",
        layers=tuple(zip(_layer_names(info), (int(d["num_chs"]) for d in info))),
        input_size=size,
        mean=mean,
        std=std,
        weights=_weights(model_name, cfg),
        build=build,
        tags=("timm",),
    )


register_factory(PREFIX, make_spec)
