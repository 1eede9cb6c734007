"""The documentation agrees with the repository: the README's result tables are what the
committed rows give, and every section of docs/methodology.md that code points at exists."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from reports import readme
from reports.__main__ import main
from twinbench.results import read_rows, row_key

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = "reports/samples/cpu-box"
# Every directory of committed rows that the README shows a generated block of.
README_SAMPLES = (SAMPLE, "reports/samples/cpu-box-resnet8", "reports/samples/cpu-box-arms",
                  "reports/samples/cpu-box-matrix")
# The sections other files point at (docs/methodology.md#<anchor>).
ANCHORS = ("import-order", "tolerances", "parity", "accuracy-gates", "seed-spread", "matrix",
           "throughput-protocol", "cpu-hosts", "gpu", "reference-programs", "data",
           "regression-gate", "resnet8", "scale-out", "keras-backends")


@pytest.mark.parametrize("sample", README_SAMPLES)
def test_readme_tables_match_the_committed_rows(sample):
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.current_block(text, sample)
    assert block is not None, f"README.md lost its '{sample}' result markers"
    expected = readme.readme_block(read_rows([ROOT / sample]), sample)
    assert block == expected, ("README.md's result tables differ from the committed rows: run "
                               f"`python -m reports readme {sample} --write README.md`")


def test_every_committed_sample_row_is_valid():
    """Every row behind a published figure reads back under the schema (read_rows raises on
    the first bad file, naming it), including the sample directories no README block shows;
    no directory holds a run twice (one run may serve two directories' experiments)."""
    for directory in sorted(p for p in (ROOT / "reports" / "samples").iterdir() if p.is_dir()):
        files = sorted(directory.rglob("*.json"))
        keys = {row_key(r) for f in files for r in read_rows([f], on_error="raise")}
        assert len(keys) == len(files), f"{directory.name}: a run is committed twice"


def test_readme_between_session_ratios_come_from_the_committed_rows():
    """The README's between-session paragraph quotes the day-earlier quick session's TF/torch
    ratios (keras_cnn training, lenet inference) beside this session's: both from rows."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    earlier = readme.readme_block(read_rows([ROOT / "reports/samples/cpu-box-arms-quick"]),
                                  "reports/samples/cpu-box-arms-quick")
    later = readme.current_block(text, "reports/samples/cpu-box-arms")
    for quoted, block in (("1.13 (0.97-1.26)", earlier), ("1.02 (0.90-1.11)", earlier),
                          ("1.68 (1.60-1.82)", later), ("0.70 (0.66-0.73)", later)):
        assert quoted in text and quoted in block, quoted


def test_readme_write_replaces_only_the_block(tmp_path, capsys):
    target = tmp_path / "README.md"
    begin, end = readme.markers(SAMPLE)
    target.write_text(f"intro\n{begin}\nstale 1,234 img/s\n{end}\noutro\n")
    assert main(["readme", str(ROOT / SAMPLE), "--source", SAMPLE, "--write", str(target)]) == 0
    text = target.read_text()
    assert text.startswith("intro\n") and text.endswith(f"{end}\noutro\n")
    assert "stale" not in text and "7,715" in text      # the TF keras_cnn training row
    target.write_text("no markers here\n")
    assert main(["readme", str(ROOT / SAMPLE), "--source", SAMPLE, "--write", str(target)]) == 2
    assert "markers" in capsys.readouterr().err


def slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    return re.sub(r"[^a-z0-9 _-]", "", heading.strip().lower()).replace(" ", "-")


def test_methodology_has_every_section_that_code_points_at():
    text = (ROOT / "docs" / "methodology.md").read_text(encoding="utf-8")
    slugs = {slug(line.lstrip("#")) for line in text.splitlines() if line.startswith("#")}
    assert set(ANCHORS) <= slugs, set(ANCHORS) - slugs
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    pointed = set()
    for name in tracked:
        path = ROOT / name
        if path.suffix in (".py", ".md", ".sh", ".ini", ".txt", ".yml", ".toml") and path.is_file():
            pointed |= set(re.findall(r"methodology\.md#([a-z0-9-]+)", path.read_text(errors="replace")))
    assert pointed - slugs == set(), f"links to missing sections: {sorted(pointed - slugs)}"


def test_compare_is_an_alias_of_machines_with_a_note(tmp_path, capsys):
    for sub in ("machines", "compare"):
        assert main([sub, str(tmp_path)]) == 2           # one machine is a usage error for both
        err = capsys.readouterr().err
        assert "needs at least two results" in err
    (tmp_path / "a").mkdir()
    main(["compare", str(tmp_path / "a"), str(tmp_path / "a")])
    assert "is now `python -m reports machines`" in capsys.readouterr().err
