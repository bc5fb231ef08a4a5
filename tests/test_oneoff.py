"""One-off comparisons (vdnacli.oneoff): `vdna compare DIR DIR`, `compare ENTRY DIR`, `nearest DIR`,
computed with the real offline extractor on real sample images and checked against the
registered entries of the same images; nothing is registered unless --save says so."""
from __future__ import annotations

import json
import os

import pytest
from typer.testing import CliRunner

from registry import EntryNotFoundError, RegistryNotFoundError
from vdnacli.catalog import Catalog
from vdnacli.errors import ConfigError
from vdnacli.oneoff import operand

N = "8"  # images per DNA (--limit N --seed 0: the same subset in `add` and in a one-off)


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    reg = tmp_path_factory.mktemp("oneoff") / "registry"
    env = {"VDNA_REGISTRY": str(reg), "VDNA_WORKERS": "0", "HF_HUB_OFFLINE": "1", "NO_COLOR": "1",
           "VDNA_DEBUG": None, "VDNA_CONFIG": None}
    runner = CliRunner()

    def run(*args, ok=True):
        from vdnacli.cli.app import app

        r = runner.invoke(app, [str(a) for a in args], env=env)
        if ok:
            assert r.exit_code == 0, (r.stdout, r.stderr, r.exception)
        return r

    run.registry = reg
    return run


@pytest.fixture(scope="module")
def entries(cli, sample_dirs):
    """faces-a and digits-a registered as `vdna add` stores them (default settings)."""
    cli("add", "fa", sample_dirs["faces-a"], "--limit", N)
    cli("add", "da", sample_dirs["digits-a"], "--limit", N)
    return Catalog(cli.registry)


def names(cli):
    return sorted(e["name"] for e in json.loads(cli("list", "--json").stdout))


def test_compare_two_folders_equals_the_registered_entries(cli, entries, sample_dirs):
    want = json.loads(cli("compare", "fa", "da", "--json").stdout)
    r = cli("compare", sample_dirs["faces-a"], sample_dirs["digits-a"], "--limit", N, "--json")
    got = json.loads(r.stdout)
    assert got["distance"] == pytest.approx(want["distance"], rel=1e-12) and got["distance"] > 0
    assert got["per_layer"] == pytest.approx(want["per_layer"], rel=1e-12)
    assert got["a"] == str(sample_dirs["faces-a"])
    assert set(got["computed"]) == {"a", "b"} and got["computed"]["a"]["images"] == int(N)
    assert got["computed"]["a"]["saved"] is None
    assert names(cli) == ["da", "fa"], "a one-off comparison registers nothing"


def test_a_folder_against_an_entry_uses_the_entrys_settings_and_save_keeps_it(cli, entries, sample_dirs):
    want = entries.compare("fa", "da").distance
    r = cli("compare", "fa", sample_dirs["digits-a"], "--limit", N, "--save", "da-again", "--quiet")
    from vdnacli.cli.output import fmt_sig  # tables and headlines: 4 significant digits (docs/cli.md)

    assert r.stdout.startswith(f"emd distance between fa and {sample_dirs['digits-a']}: {fmt_sig(want)} ")
    assert r.stderr == "", "--quiet: no progress and no notes"
    assert names(cli) == ["da", "da-again", "fa"]
    assert entries.compare("da-again", "da").distance == 0
    assert entries.get("da-again").meta["origin"]["like"] == "fa"
    assert entries.thumbnails("da-again") is not None, "a saved DNA keeps thumbnails as `add` does"
    cli("remove", "da-again")


def test_nearest_of_a_folder_ranks_only_comparable_entries(cli, entries, sample_dirs):
    fa = entries.get("fa")  # the same DNA in 500 bins: an entry the query cannot be compared with
    fa.hist = {l: h.reshape(h.shape[0], -1, 2).sum(axis=-1) for l, h in fa.hist.items()}
    fa.meta["bins"], fa.shards = 500, None
    entries.put("fa-500", fa)
    r = cli("nearest", sample_dirs["faces-a"], "--limit", N, "--top", "5", "--save", "fa-again", "--json")
    ranked = json.loads(r.stdout)
    assert [x["name"] for x in ranked] == ["fa", "da"] and ranked[0]["distance"] == 0, "not itself, though saved"
    assert ranked[1]["distance"] == pytest.approx(entries.compare("fa", "da").distance, rel=1e-12)
    assert "fa-500" in r.stderr and "not comparable" in r.stderr
    assert names(cli) == ["da", "fa", "fa-500", "fa-again"]
    cli("remove", "fa-500")
    cli("remove", "fa-again")


def test_save_names_are_checked_before_computing(cli, entries, sample_dirs):
    for args, msg in ((["--save", "x"], "give --save 2 name"), (["--save", "x,x"], "must differ"),
                      (["--save", "fa,y"], "already exists")):
        r = cli("compare", sample_dirs["faces-a"], sample_dirs["digits-a"], *args, ok=False)
        assert r.exit_code != 0 and msg in str(r.exception), (args, r.exception)
    r = cli("compare", "fa", "da", "--save", "x", "--limit", "3", ok=False)
    assert "--limit, --save apply to images given instead of an entry" in str(r.exception)
    assert names(cli) == ["da", "fa"]


def test_operand_rule(entries, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for text in ("-", "hf://datasets/org/name", "https://x.org/a.jpg", "./fa", "imgs/", "shard-{000..009}.tar", "~/x"):
        assert operand(entries, text).is_source, text
    assert operand(entries, "fa").entry == "fa" and operand(entries, "fa").note is None
    (tmp_path / "fa").mkdir()  # a folder named like an entry: the entry wins, and a note says how to get the folder
    op = operand(entries, "fa")
    assert op.entry == "fa" and "./fa" in op.note
    (tmp_path / "pic.png").write_bytes(b"")
    assert operand(entries, "pic.png").is_source
    with pytest.raises(EntryNotFoundError):
        operand(entries, "nothere")
    with pytest.raises(RegistryNotFoundError):
        operand(Catalog(tmp_path / "no-registry"), "nothere")
    from vdnacli.oneoff import operands

    with pytest.raises(ConfigError, match="stdin"):
        operands(entries, ["-", "-"])


def test_matrix_reports_progress_in_pairs(entries):
    calls = []
    entries.matrix(["fa", "da", "fa"], progress=lambda d, t: calls.append((d, t)))
    assert calls[0] == (0, 3) and calls[-1] == (3, 3)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    calls.clear()
    entries.matrix(["fa", "da"], metric="emd", workers=1, progress=lambda d, t: calls.append((d, t)))
    assert calls[-1] == (1, 1)
