"""`compare`: the same configurations measured on several machines, side by side.

Each input (a results file or directory) holds one machine's rows. For every configuration
the table gives img/s per machine and the speed-up over the base machine; a second table
gives the within-machine TF/torch ratio, the figure that stays comparable across hardware
(it cancels the machine's raw speed).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from twinbench.fingerprint import hardware_label
from twinbench.frameworks.modes import default_mode
from twinbench.results import ResultError
from reports.load import Config, Measurement, by_machine, measurements
from reports.tables import DASH, Table, fmt_rate, status_cell


@dataclass
class MachineResults:
    source: str
    label: str
    fingerprint: dict
    measurements: dict[Config, Measurement]


def machine_results(source: str, rows: list[dict]) -> MachineResults:
    """One machine's rows; ResultError when `source` holds none, or rows of several machines."""
    groups = by_machine(rows)
    if not groups:
        raise ResultError(f"{source}: no valid result rows")
    if len(groups) > 1:
        found = ", ".join(f"{hardware_label(g[0]['machine'])} (id {mid})" for mid, g in groups.items())
        raise ResultError(f"{source}: holds rows from {len(groups)} machines ({found}); "
                          f"give each machine's results as a separate argument")
    fp = rows[0]["machine"]
    return MachineResults(source, hardware_label(fp), fp, measurements(rows))


def resolve_base(machines: list[MachineResults], base: str) -> int:
    """The base machine: a 0-based argument index, the argument as given, or its hardware label
    (exact, else a case-insensitive substring); ValueError unless exactly one machine matches."""
    if base.lstrip("-").isdigit():
        index = int(base)
        if not 0 <= index < len(machines):
            raise ValueError(f"--base {base}: index out of range 0..{len(machines) - 1}")
        return index
    tests = (lambda m: Path(base) == Path(m.source),
             lambda m: base == m.label,
             lambda m: base.lower() in m.label.lower())
    for test in tests:
        matches = [i for i, m in enumerate(machines) if test(m)]
        if len(matches) == 1:
            return matches[0]
        if matches:
            break
    known = "; ".join(f"{i}: {m.label}" for i, m in enumerate(machines))
    problem = "matches several machines" if matches else "matches no machine"
    raise ValueError(f"--base {base!r} {problem}; give an index or a unique label ({known})")


def speedup_table(machines: list[MachineResults], base: int) -> Table:
    # Columns name machines by their [index] in the legend above the table: full hardware
    # labels in every header would make the table several screens wide.
    configs = sorted({c for m in machines for c in m.measurements}, key=Config.sort_key)
    others = [i for i in range(len(machines)) if i != base]
    headers = [*Config.COLUMNS, *(f"img/s [{i}]" for i in range(len(machines))),
               *(f"speed-up [{i}] vs [{base}]" for i in others)]
    rows = []
    for config in configs:
        cells = config.cells()
        for m in machines:
            measured = m.measurements.get(config)
            cells.append(DASH if measured is None else
                         fmt_rate(measured.median) if measured.ok else status_cell(measured))
        reference = machines[base].measurements.get(config)
        for i in others:
            cells.append(_ratio(machines[i].measurements.get(config), reference, "x"))
        rows.append(cells)
    align = ["left"] * 6 + ["right"] * (1 + len(machines) + len(others))
    return Table(headers, rows, align)


def _paired_mode(c: Config) -> str:
    """Each framework's default mode (TF "graph", torch "eager") pairs with the other's."""
    return "default" if c.mode == default_mode(c.framework, c.device) else c.mode


def framework_ratio_table(machines: list[MachineResults]) -> Table:
    """TF img/s divided by torch img/s for each configuration that both frameworks ran."""
    keys = sorted({(c.arch, c.device, _paired_mode(c), c.phase, c.precision, c.batch_size)
                   for m in machines for c in m.measurements},
                  key=lambda k: (k[0], k[1], k[3], k[5], k[2], k[4]))
    rows = []
    for arch, device, mode, phase, precision, batch in keys:
        tf_mode, torch_mode = ((default_mode("tf", device), default_mode("torch", device))
                               if mode == "default" else (mode, mode))
        tf = Config("tf", arch, device, tf_mode, phase, batch, precision)
        torch = Config("torch", arch, device, torch_mode, phase, batch, precision)
        if not any(tf in m.measurements and torch in m.measurements for m in machines):
            continue
        shown = mode if tf_mode == torch_mode else f"{tf_mode} / {torch_mode}"
        cells = [arch, device, shown, phase, precision, str(batch)]
        cells += [_ratio(m.measurements.get(tf), m.measurements.get(torch), "") for m in machines]
        rows.append(cells)
    headers = ["arch", "device", "mode", "phase", "precision", "batch",
               *(f"TF/torch [{i}]" for i in range(len(machines)))]
    return Table(headers, rows, ["left"] * 5 + ["right"] * (1 + len(machines)))


def _ratio(numerator: Measurement | None, denominator: Measurement | None, suffix: str) -> str:
    if numerator is None or denominator is None:
        return DASH
    if not numerator.ok or not denominator.ok:
        return status_cell(numerator) if not numerator.ok else DASH
    return f"{numerator.median / denominator.median:.2f}{suffix}"


def compare_markdown(machines: list[MachineResults], base: int) -> str:
    out = ["# twinbench: machines compared", ""]
    for i, m in enumerate(machines):
        label = m.label
        role = " (base)" if i == base else ""
        sample = " - sample fixture, not a measurement" if m.fingerprint.get("sample") else ""
        out.append(f"- [{i}] {label}{role}: {m.source} (machine id {m.fingerprint['id']}){sample}")
    out += ["", "## Images/s and speed-up over the base machine", "",
            speedup_table(machines, base).markdown(), "",
            "## TF/torch ratio within each machine", "",
            "Comparable across hardware: above 1, TensorFlow is faster on that machine.", "",
            framework_ratio_table(machines).markdown(), ""]
    return "\n".join(out)
