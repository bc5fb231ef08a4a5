"""The honest CLI (issue 16): names that match nothing are errors naming the closest ones,
rank-transfer refuses what it would silently ignore, error messages say the true state, exit
codes by class (docs/cli.md) and JSON errors, Ctrl-C, plain help for every command, tables.

Most commands run in-process through `vdnacli.cli.app.run` (the CLI's whole error handling,
without a subprocess) on a registry of synthetic hist-only DNAs; what needs the method (an
--append of real images) uses the real offline extractor, and Ctrl-C a real subprocess."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from vdnacli.catalog import Catalog
from vdnacli.cli.app import run
from vdnacli.dna import DNA, new_meta

LAYERS = {"stage1": 4, "head": 6}
PRE = {"crop": "center", "resize": "pil-bicubic-antialias", "size": 224, "mean": [0.5] * 3, "std": [0.5] * 3}
NAMES = ("seed-a", "seed-b", "seed-c", "seed-d")


def synthetic(seed: int, num_images: int = 20) -> DNA:
    rng = np.random.default_rng(seed)
    meta = new_meta(extractor="efficientnet-lite0", weights_sha256="a" * 64, ranges_sha256="b" * 64, layers=LAYERS,
                    bins=16, preprocessing=PRE, kinds=("hist",))
    meta["num_images"] = num_images
    return DNA(meta=meta, hist={l: rng.integers(1, 400, size=(n, 16)).astype(np.int64) for l, n in LAYERS.items()})


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("strict") / "registry"
    cat = Catalog(root)
    for i, name in enumerate(NAMES):
        cat.put(name, synthetic(i + 1))
    cat.put("single", synthetic(9, num_images=1))
    return root


class Result:
    def __init__(self, code: int, out: str, err: str):
        self.code, self.stdout, self.stderr = code, out, err

    def json(self):
        return json.loads(self.stdout)


@pytest.fixture
def cli(registry, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("VDNA_REGISTRY", str(registry))
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("VDNA_WORKERS", "0")
    monkeypatch.delenv("VDNA_DEBUG", raising=False)
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()

    def call(*args) -> Result:
        code = run([str(a) for a in args])
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return call


def one_line_error(r: Result, code: int) -> str:
    assert r.code == code, (r.code, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert "internal error" not in lines[0] and "Traceback" not in r.stderr
    return lines[0]


# -- 1. names that match nothing: errors naming the closest ones, everywhere -------------------------
def _ref(tmp: Path, text: str) -> Path:
    p = tmp / "ref.csv"
    p.write_text(text)
    return p


UNKNOWN = {  # case -> (arguments, text the one-line error must hold)
    "show": (lambda t: ["show", "sed-a"], "did you mean 'seed-a'"),
    "compare": (lambda t: ["compare", "seed-a", "seeed-b"], "did you mean 'seed-b'"),
    "remove": (lambda t: ["remove", "seed_c"], "did you mean 'seed-c'"),
    "like": (lambda t: ["add", "x", t, "--like", "sed-a"], "did you mean 'seed-a'"),
    "matrix": (lambda t: ["matrix", "seed-a", "sed-d"], "did you mean 'seed-d'"),
    "layer": (lambda t: ["compare", "seed-a", "seed-b", "--layer", "haed"], "no layer 'haed' (did you mean 'head'?)"),
    "neuron-layer": (lambda t: ["nearest", "seed-a", "--neuron", "stag1:0"], "did you mean 'stage1'"),
    "mask": (lambda t: ["compare", "seed-a", "seed-b", "--mask", "hat"], "no mask 'hat' (did you mean 'hats'?)"),
    "extractor": (lambda t: ["add", "x", t, "--extractor", "efficientnet-lite"], "did you mean 'efficientnet-lite0'"),
    "target": (lambda t: ["rank-transfer", "--target", "seed-aa"], "--target: no entry 'seed-aa' (did you mean"),
    "sources": (lambda t: ["rank-transfer", "--target", "seed-a", "--sources", "seed-b,sed-c"],
                "--sources: no entry 'sed-c' (did you mean 'seed-c'"),
    "report": (lambda t: ["report", t / "r.html", "--entries", "sed-b"], "did you mean 'seed-b'"),
}


@pytest.fixture(scope="module")
def with_mask(registry):
    from vdnacli.masks import create_focus_mask

    cat = Catalog(registry)
    if "hats" not in cat.masks:
        cat.put_mask("hats", create_focus_mask([cat.get("seed-a")], [cat.get("seed-b")], 3, "emd", None))
    return registry


@pytest.mark.parametrize("case", list(UNKNOWN))
def test_unknown_names_are_errors_naming_the_closest(case, cli, with_mask, tmp_path):
    make_args, text = UNKNOWN[case]
    before = sorted(p.name for p in (with_mask / "entries").iterdir())
    line = one_line_error(cli(*make_args(tmp_path)), 3)
    assert text in line, line
    assert sorted(p.name for p in (with_mask / "entries").iterdir()) == before


def test_a_name_with_nothing_close_lists_the_choices(cli):
    line = one_line_error(cli("rank-transfer", "--target", "seed-a", "--sources", "nothere"), 3)
    assert line == ("error: --sources: no entry 'nothere' (choose from seed-a, seed-b, seed-c, seed-d, single); "
                    "see 'vdna list'")


# -- 2. rank-transfer: the silent cases of the issue, and --lower-is-better --------------------------------
def test_rank_transfer_refuses_what_it_used_to_ignore(cli, tmp_path):
    # `--sources cityscapes,digtis` ranked only one source, exit 0
    r = cli("rank-transfer", "--target", "seed-a", "--sources", "seed-b,seed-cc", "--json")
    assert r.code == 3 and r.json() == {"error": one_line_error(r, 3)[len("error: "):], "code": 3, "kind": "not-found"}
    assert "did you mean 'seed-c'" in r.json()["error"]
    # `--sources nothere`: an empty table, exit 0
    assert cli("rank-transfer", "--target", "seed-a", "--sources", "nothere").code == 3
    # a reference row named like no entry was ignored, d computed over the rest
    ref = _ref(tmp_path, "source,seed-a\nseed-b,0.9\nseed-c,0.5\nsed-d,0.1\n")
    line = one_line_error(cli("rank-transfer", "--target", "seed-a", "--reference", ref), 3)
    assert "ref.csv, row 'sed-d': no entry 'sed-d' (did you mean 'seed-d'" in line
    # a target column named like no target gave `d = —`, exit 0
    ref = _ref(tmp_path, "source,seed-aa\nseed-b,0.9\nseed-c,0.5\n")
    line = one_line_error(cli("rank-transfer", "--target", "seed-a", "--reference", ref), 3)
    assert line == "error: ref.csv has no column for target 'seed-a' (did you mean 'seed-aa'?)"
    # a column without any score of a ranked source: nothing to evaluate
    ref = _ref(tmp_path, "source,seed-a,seed-b\nseed-c,,0.5\n")
    line = one_line_error(cli("rank-transfer", "--target", "seed-a", "--sources", "seed-b,seed-d", "--reference",
                              ref), 1)
    assert "column 'seed-a' has no score for any ranked source" in line


def test_lower_is_better_flips_the_ground_truth(cli, tmp_path):
    ranked = cli("rank-transfer", "--target", "seed-a", "--sources", "seed-b,seed-c,seed-d", "--json").json()
    order = [r["name"] for r in ranked["rankings"]["seed-a"]]
    # scores that agree with the ranking when higher is better: closest source best
    good = {n: s for n, s in zip(order, (90.0, 50.0, 10.0))}
    ref = _ref(tmp_path, "source,seed-a\n" + "".join(f"{n},{s}\n" for n, s in good.items()))
    high = cli("rank-transfer", "--target", "seed-a", "--sources", "seed-b,seed-c,seed-d", "--reference", ref,
               "--json").json()
    assert high["spearman"] == pytest.approx(1.0) and high["discrepancy"] == 0 and high["higher_is_better"] is True
    low = cli("rank-transfer", "--target", "seed-a", "--sources", "seed-b,seed-c,seed-d", "--reference", ref,
              "--lower-is-better", "--json").json()
    # read as error rates, the same numbers say the closest source transferred worst
    assert low["spearman"] == pytest.approx(-1.0) and low["higher_is_better"] is False
    assert low["discrepancy"] == pytest.approx((80 + 0 + 80) / 3)
    text = cli("rank-transfer", "--target", "seed-a", "--sources", "seed-b,seed-c,seed-d", "--reference", ref,
               "--lower-is-better")
    assert "(lower is better): discrepancy d = 53.33, Spearman rho = -1.000" in text.stdout
    assert "lower-is-better" in cli("rank-transfer", "--help").stdout


# -- 3. messages true to the state --------------------------------------------------------------------
def test_missing_kind_says_what_the_entry_holds(cli):
    line = one_line_error(cli("compare", "seed-a", "seed-b", "--metric", "nfd"), 4)
    assert line == ("error: 'seed-a' holds hist, not gauss (--metric nfd needs gauss): use --metric emd, or recompute "
                    "it with 'vdna add seed-a SOURCE --kind hist,gauss --replace'")


def test_existing_name_names_replace_and_append(cli, tmp_path):
    from PIL import Image

    (tmp_path / "imgs").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "imgs" / "a.png")
    line = one_line_error(cli("add", "seed-a", tmp_path / "imgs"), 1)
    assert "--replace overwrites it, --append adds new images to it" in line


def test_append_of_counted_and_corrupt_images_says_so(cli, sample_dirs, tmp_path, monkeypatch):
    reg = tmp_path / "reg"
    monkeypatch.setenv("VDNA_REGISTRY", str(reg))
    six, mixed = tmp_path / "six", tmp_path / "mixed"
    six.mkdir(), mixed.mkdir()
    for p in sorted(sample_dirs["faces-a"].glob("*.png"))[:6]:
        (six / p.name).write_bytes(p.read_bytes())
        (mixed / p.name).write_bytes(p.read_bytes())
    for i in range(3):
        (mixed / f"broken-{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40))
    r = cli("add", "x", six)
    assert r.code == 0, r.stderr
    assert "added x: 6 images (6 in DNA)" in r.stdout
    line = one_line_error(cli("add", "x", mixed, "--append"), 1)
    assert line.startswith("error: none new among 9 files: 6 already counted, 3 unreadable (broken-0.png: ")
    assert cli("show", "x", "--json").json()["num_images"] == 6


# -- 4. exit codes by class, JSON errors ---------------------------------------------------------------
def test_json_error_is_one_object_on_stdout(cli):
    r = cli("show", "no-such-entry", "--json")
    line = one_line_error(r, 3)
    assert r.json() == {"error": line[len("error: "):], "code": 3, "kind": "not-found"}
    usage = cli("list", "--no-such-flag", "--json")
    assert usage.code == 2 and usage.json() == {"error": "No such option: --no-such-flag", "code": 2, "kind": "usage"}
    top0 = cli("nearest", "seed-a", "--top", "0")
    assert top0.code == 2 and top0.stderr.splitlines()[:2] == ["Usage: vdna nearest [OPTIONS] NAME",
                                                             "Try 'vdna nearest --help' for help."]
    assert top0.stderr.splitlines()[2].startswith("error: Invalid value for '--top'")
    assert cli("list", "--json").code == 0  # and a success is still the listing
    assert {e["name"] for e in cli("list", "--json").json()} >= set(NAMES)


def test_verdict_commands_keep_errors_above_their_answer(cli, tmp_path):
    texts = tmp_path / "texts"
    texts.mkdir()
    (texts / "a.txt").write_text("no image\n")
    r = cli("drift", "seed-a", texts, "--neuron", "head")  # a plain user error (class 1) from a verdict command
    assert one_line_error(r, 2).startswith("error: --neuron expects LAYER:INDICES")
    assert cli("drift", "seed-a", texts).code == 4  # seed-a keeps no shards: incompatible, 4 as anywhere
    assert cli("drift", "sed-a", texts).code == 3
    assert cli("verify", "--registry", tmp_path / "nothing-here").code == 3


def test_error_classes_define_the_documented_codes():
    from registry import CorruptEntryError, EntryExistsError, EntryNotFoundError
    from vdnacli import errors
    from vdnacli.hub.errors import HubIntegrityError, HubNotFoundError, HubOfflineError

    table = (Path(__file__).resolve().parents[1] / "docs" / "cli.md").read_text()
    documented = dict(re.findall(r"^\| (\d+)\s+\| `([a-z-]+)`", table, flags=re.M))
    cases = [(errors.ConfigError("x"), 1), (errors.NotFoundError("x"), 3), (errors.SourceNotFoundError("x"), 3),
             (errors.UnknownExtractorError("x"), 3), (errors.IncompatibleDNAError("x"), 4),
             (errors.FormatError("x"), 5), (errors.ImageDecodeError("x"), 5), (errors.WeightsUnavailableError("x"), 6),
             (HubNotFoundError("x"), 3), (HubOfflineError("x"), 6), (HubIntegrityError("x"), 5),
             (EntryNotFoundError("a", "/r"), 3), (CorruptEntryError("x"), 5), (EntryExistsError("a"), 1),
             (KeyboardInterrupt(), 130)]
    for exc, code in cases:
        got, kind = errors.classify(exc)
        assert got == code, (exc, got)
        assert documented[str(code)] == kind, (code, kind)


# -- 5. Ctrl-C ----------------------------------------------------------------------------------------
def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _running(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "State:\tZ" not in status


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs /proc to see the decode workers")
def test_ctrl_c_during_add_stops_workers_and_writes_nothing(tmp_path):
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(300):
        Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(folder / f"{i:03d}.png")
    reg = tmp_path / "reg"
    env = dict(os.environ, VDNA_REGISTRY=str(reg), NO_COLOR="1", HF_HUB_OFFLINE="1", VDNA_WORKERS="2")
    env.pop("VDNA_DEBUG", None)
    p = subprocess.Popen([sys.executable, "-m", "vdnacli", "add", "many", str(folder)], env=env, cwd=tmp_path,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while len(_children(p.pid)) < 2 and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        workers = _children(p.pid)
        assert len(workers) >= 2 and p.poll() is None, "the decode workers never started"
        time.sleep(0.5)  # decoding and counting are under way
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=30)  # a liveness bound; the time to exit is bench/bench_interrupt.py's
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130, err
    assert err == "interrupted — nothing was written\n" and out == ""
    assert not (reg / "entries" / "many.h5").exists()
    time.sleep(0.5)
    assert not [w for w in workers if _running(w)], "decode workers outlived the interrupt"


# -- 6. help --------------------------------------------------------------------------------------------
def _all_commands():
    import typer.main

    from vdnacli.cli.app import app

    def walk(group, path):
        for name, cmd in group.commands.items():
            yield path + [name], cmd
            if hasattr(cmd, "commands"):
                yield from walk(cmd, path + [name])

    root = typer.main.get_command(app)
    return [([], root)] + list(walk(root, []))


def test_help_of_every_command_is_plain_and_whole(cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    commands = _all_commands()
    assert {"mask", "ranges"} <= {p[0] for p, _ in commands if p} and len(commands) > 25
    for path, cmd in commands:
        r = cli(*path, "--help")
        text = r.stdout
        assert r.code == 0 and text.startswith(f"Usage: {' '.join(['vdna', *path])} "), (path, text[:200])
        # Typer's placeholders: <bool>, <str>, <list[str]>, <int range>, <path>, {name} in the usage line
        assert not re.search(r"<(bool|str|int|float|path|list\[[a-z]+\]|[a-z]+ range)>", text), (path, text)
        assert not re.search(r"\{[a-z_]+\}", text.splitlines()[0]), (path, text)
        assert "\\[" not in text and "╭" not in text and "\x1b[" not in text
        for param in cmd.params:
            if getattr(param, "is_flag", False):
                flag = max(param.opts, key=len)
                options = text.split("\nOptions:\n", 1)[1]
                line = next(l for l in options.splitlines() if re.match(rf"  (-\w, )?{re.escape(flag)}(\s|$)", l))
                after = line.split(flag, 1)[1]
                assert after == "" or after.startswith("  ") or after.startswith(" /"), (path, line)
        # prose is re-wrapped: the first paragraph of the docstring appears whole, on joined lines
        first = " ".join((cmd.help or "").split("\n\n")[0].split()).replace("\\[", "[").replace("\\]", "]")
        assert first in " ".join(text.split()), (path, first)
    assert "needs vdnacli[plot]" in " ".join(cli("compare", "--help").stdout.split())
    nearest = cli("nearest", "--help").stdout
    assert re.search(r"^  --json\s+Print JSON", nearest, flags=re.M)
    assert re.search(r"^  -k, --top N\s+How many entries", nearest, flags=re.M)


# -- 7. tables ----------------------------------------------------------------------------------------
def test_numbers_share_significant_digits_per_column():
    from vdnacli.cli.output import fmt_sig, format_columns

    cells = format_columns([["a", 3.0, 1, 0.9999999999999999], ["b", 10.0, 22, 0.00012345], ["c", None, 3, float("nan")]], 4)
    # a nonzero value that the column's decimals would show as 0 keeps its digits
    assert cells == [["a", "3.00", "1", "1.000"], ["b", "10.00", "22", "1.234e-04"], ["c", "—", "3", "—"]]
    assert fmt_sig(154.23456) == "154.2" and fmt_sig(0.00012345) == "0.0001234" and fmt_sig(1e-12) == "1.000e-12"
    assert format_columns([[np.float32(2.5)], [np.float64(123.456)]], 1) == [["2.5"], ["123.5"]]


def test_piped_tables_have_no_trailing_padding_and_right_plurals(cli, registry):
    listing = cli("list")
    assert listing.code == 0 and listing.stdout.startswith(f"5 DNAs in {registry}\n")
    shown = cli("show", "seed-a")
    for text in (listing.stdout, shown.stdout, cli("nearest", "seed-a").stdout, cli("matrix").stdout):
        assert text and not [l for l in text.splitlines() if l != l.rstrip()], text
    assert max(len(l) for l in cli("nearest", "seed-a").stdout.splitlines()) < 80
    from vdnacli.text import plural

    assert [plural(1, "image"), plural(2, "image"), plural(1, "entry"), plural(3, "entry")] == \
        ["1 image", "2 images", "1 entry", "3 entries"]
