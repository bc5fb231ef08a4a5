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


def _clean(monkeypatch, tmp_path):
    for var in ("VDNA_REGISTRY", "VDNA_BINS", "VDNA_BATCH_SIZE", "VDNA_DEVICE", "XDG_DATA_HOME", "HF_HUB_OFFLINE",
                "VDNA_CONFIG", "VDNA_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))


def test_user_config_sits_below_the_project_file(tmp_path, monkeypatch):
    from vdnacli.config import explain, user_config_path

    _clean(monkeypatch, tmp_path)
    user = tmp_path / "xdg" / "vdna" / "config.yaml"
    assert user_config_path() == user  # platformdirs: XDG_CONFIG_HOME on Linux
    user.parent.mkdir(parents=True)
    user.write_text("registry: my-reg\nbins: 300\ndevice: cpu\n")
    project = tmp_path / "proj"
    project.mkdir()
    s = load_settings(cwd=project)
    assert s.registry == user.parent / "my-reg" and s.bins == 300 and s.registry_from == str(user)
    (project / "vdna.yaml").write_text("bins: 400\n")
    monkeypatch.setenv("VDNA_DEVICE", "cuda:1")
    got = explain(cwd=project, batch_size=7)
    assert got["bins"][0] == 400 and got["bins"][1].kind == "project"
    assert got["device"][0] == "cuda:1" and str(got["device"][1]) == "env VDNA_DEVICE"
    assert got["registry"][1].kind == "user" and got["batch_size"] == (7, got["batch_size"][1])
    assert got["batch_size"][1].kind == "flag" and got["workers"][1].kind == "default"
    # VDNA_CONFIG names the user file instead; a missing one is an error, not silently nothing
    other = tmp_path / "other.yaml"
    other.write_text("extractor: resnet50\n")
    monkeypatch.setenv("VDNA_CONFIG", str(other))
    s = load_settings(cwd=project)
    assert s.extractor == "resnet50" and s.bins == 400 and s.registry_from == "default"
    monkeypatch.setenv("VDNA_CONFIG", str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match="VDNA_CONFIG"):
        load_settings(cwd=project)
    other.write_text("colour: blue\n")
    monkeypatch.setenv("VDNA_CONFIG", str(other))
    with pytest.raises(ConfigError, match="unknown setting"):
        load_settings(cwd=project)


def test_config_command_shows_values_and_origins(tmp_path, monkeypatch):
    import json

    from typer.testing import CliRunner

    from vdnacli.cli.app import app

    _clean(monkeypatch, tmp_path)
    user = tmp_path / "u.yaml"
    user.write_text("bins: 300\n")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "vdna.yaml").write_text("batch_size: 9\n")
    r = CliRunner().invoke(app, ["config", "--json"], env={"VDNA_CONFIG": str(user), "VDNA_DEVICE": "cpu"})
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout)
    s = got["settings"]
    assert (s["bins"]["value"], s["bins"]["from"], s["bins"]["detail"]) == (300, "user", str(user))
    assert (s["batch_size"]["value"], s["batch_size"]["from"]) == (9, "project")
    assert (s["device"]["value"], s["device"]["from"], s["device"]["detail"]) == ("cpu", "env", "VDNA_DEVICE")
    assert s["extractor"] == {"value": "efficientnet-lite0", "from": "default", "detail": None}
    assert got["files"]["user"] == {"path": str(user), "exists": True, "from_env": "VDNA_CONFIG"}
    r = CliRunner().invoke(app, ["config"], env={"VDNA_CONFIG": str(user)})
    rows = {line.split()[0]: line.split()[1:] for line in r.stdout.splitlines() if line.strip()}
    assert rows["bins"] == ["300", "user", "config", str(user)] and rows["batch_size"] == ["9", "./vdna.yaml"]
