"""`render`: result rows -> report.md, report.html and PNG plots in one output directory."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from reports import attribution, html, plots, runtime_api, verdict
from reports.load import accuracy_rows, by_machine, machine_labels, measurements
from reports.tables import (Table, accuracy_table, machines_table, summary_table,
                            throughput_groups)

TITLE = "twinbench report"
SAMPLE_NOTE = ("Some rows are marked as sample fixtures (machine.sample = true): they are "
               "illustrative test data, NOT measurements.")


@dataclass
class Rendered:
    markdown: Path
    html: Path
    plots: list[Path] = field(default_factory=list)
    summary: Table | None = None
    answer: str = ""          # the verdict section's Markdown, what the CLI prints


def render(rows: list[dict], out_dir, *, skipped: int = 0) -> Rendered:
    """Write the report for `rows` (already validated) into `out_dir`; return what was written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    groups = by_machine(rows)
    labels = machine_labels(rows)
    per_machine = {mid: measurements(group) for mid, group in groups.items()}
    accuracy = accuracy_rows(rows)

    summary = summary_table(rows, labels, per_machine)
    pngs = (plots.throughput_plots(per_machine, labels, out)
            + plots.accuracy_plots(accuracy, labels, out))

    notes = []
    if any(r["machine"].get("sample") for r in rows):
        notes.append(SAMPLE_NOTE)
    source = f"{len(rows)} result rows from {len(groups)} machine(s)"
    if skipped:
        source += f"; {skipped} unreadable or invalid file(s) skipped (named on stderr)"
    notes.append(source + ".")

    answer = verdict_parts(rows, labels, per_machine)
    sections: list[tuple[str, list]] = [("Verdict: TensorFlow vs torch", answer),
                                        ("Summary", [summary])]
    throughput_parts: list = []
    for mid, ms in per_machine.items():
        if ms:
            throughput_parts.append(("h3", f"{labels[mid]} (machine id {mid})"))
            for (arch, phase), table in throughput_groups(ms).items():
                throughput_parts += [("h4", f"{arch}, {phase}"), table]
    if throughput_parts:
        sections.append(("Throughput", throughput_parts))
    if accuracy:
        sections.append(("Accuracy", [accuracy_table(accuracy, labels)]))
    sentences = attribution.attribution_sentences(rows, labels)
    if sentences:
        sections.append(("Recipe or framework? (the matrix: same weights, same data order)",
                         [("p", s) for s in sentences]))
    split = runtime_api.parts(rows, labels, per_machine)
    if split:
        sections.append(("Runtime or API? (Keras on TensorFlow, Keras on torch, torch)", split))
    if pngs:
        sections.append(("Plots", [("img", p.name) for p in pngs]))
    sections.append(("Machines", [machines_table(groups, labels)]))

    md_path = out / "report.md"
    md_path.write_text(_markdown(TITLE, notes, sections), encoding="utf-8")
    html_path = out / "report.html"
    html_path.write_text(html.page(TITLE, notes, sections), encoding="utf-8")
    return Rendered(md_path, html_path, pngs, summary, _parts_markdown(answer))


VERDICT_NOTE = ("Each framework's best mode per architecture, phase and batch; the ratio is of "
                "medians over timed rounds, its 95% interval a percentile bootstrap of those "
                "rounds (noise within this run, not between runs). Accuracy: means over the "
                "runs (n), gap against the band that reseeding alone produces.")


def verdict_parts(rows, labels, per_machine) -> list:
    """The report's first section: what was measured, answered (empty tables left out)."""
    parts: list = []
    speed = verdict.throughput_verdict(per_machine, labels)
    accuracy = verdict.accuracy_verdict(rows, labels)
    if speed is not None:
        parts += [("h3", "Throughput"), speed]
    if accuracy is not None:
        parts += [("h3", "Accuracy (same recipe in both frameworks)"), accuracy]
    if not parts:
        return [("p", "No configuration or recipe was measured in both frameworks here: "
                      "nothing to compare (the details below list what was measured).")]
    return parts + [("p", VERDICT_NOTE)]


def _parts_markdown(parts: list) -> str:
    out = []
    for part in parts:
        if isinstance(part, Table):
            out += [part.markdown(), ""]
        elif part[0] == "img":
            out += [f"![{part[1]}]({part[1]})", ""]
        elif part[0] in ("h3", "h4"):
            out += [f"{'#' * int(part[0][1])} {part[1]}", ""]
        else:
            out += [part[1], ""]
    return "\n".join(out)


def _markdown(title: str, notes: list[str], sections: list[tuple[str, list]]) -> str:
    out = [f"# {title}", ""]
    out += [f"> {n}\n" for n in notes]
    for heading, parts in sections:
        out += [f"## {heading}", "", _parts_markdown(parts)]
    return "\n".join(out)


def summary_markdown(rows: list[dict]) -> str:
    """The verdict and the summary table, as Markdown (what the end of a pytest run prints)."""
    labels = machine_labels(rows)
    per_machine = {mid: measurements(group) for mid, group in by_machine(rows).items()}
    return (_parts_markdown(verdict_parts(rows, labels, per_machine)) + "\n"
            + summary_table(rows, labels, per_machine).markdown())
