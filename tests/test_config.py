"""Settings precedence: flag > environment > ./vdna.yaml > default."""
from __future__ import annotations

from pathlib import Path

import pytest

from vdnacli.config import load_settings
from vdnacli.errors import ConfigError


def test_precedence(tmp_path, monkeypatch):
    for var in ("VDNA_REGISTRY", "VDNA_BINS", "VDNA_BATCH_SIZE", "XDG_DATA_HOME", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert load_settings(cwd=tmp_path).registry == tmp_path / "home" / ".local" / "share" / "vdna" / "registry"
    (tmp_path / "vdna.yaml").write_text("registry: reg-from-yaml\nbins: 500\nbatch_size: 8\n")
    s = load_settings(cwd=tmp_path)
    assert s.registry == tmp_path / "reg-from-yaml" and s.bins == 500 and s.batch_size == 8
    monkeypatch.setenv("VDNA_REGISTRY", str(tmp_path / "env-reg"))
    monkeypatch.setenv("VDNA_BINS", "200")
    s = load_settings(cwd=tmp_path)
    assert s.registry == tmp_path / "env-reg" and s.bins == 200 and s.batch_size == 8
    s = load_settings(cwd=tmp_path, registry=Path("/x/flag"), bins=100)
    assert s.registry == Path("/x/flag") and s.bins == 100
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert load_settings(cwd=tmp_path).offline is True


def test_bad_settings(tmp_path, monkeypatch):
    monkeypatch.delenv("VDNA_BINS", raising=False)
    (tmp_path / "vdna.yaml").write_text("bins: lots\n")
    with pytest.raises(ConfigError):
        load_settings(cwd=tmp_path)
    (tmp_path / "vdna.yaml").write_text("colour: blue\n")
    with pytest.raises(ConfigError, match="unknown setting"):
        load_settings(cwd=tmp_path)
    (tmp_path / "vdna.yaml").write_text("bins: [1\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(cwd=tmp_path)


def test_example_file_lists_every_setting():
    import dataclasses

    import yaml

    from vdnacli.config import SETTING_NAMES, Settings

    example = yaml.safe_load((Path(__file__).parents[1] / "vdna.yaml.example").read_text())
    assert set(example) == set(SETTING_NAMES) == {f.name for f in dataclasses.fields(Settings)} - {"registry_from"}
