"""`machines` (formerly `compare`): the same configurations measured on several machines.

Each input (a results file or directory) holds one machine's rows. For every configuration
the table gives img/s per machine and the speed-up over the base machine; a second table
gives the within-machine TF/torch ratio of each framework's best mode, the figure that stays
comparable across hardware (it cancels the machine's raw speed). The two frameworks' modes
have different names (TensorFlow's default is a tf.function graph, torch's is eager), so the
ratio pairs the best of each rather than equal names.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from twinbench.fingerprint import hardware_label
from twinbench.results import ResultError
from reports.load import Config, Measurement, by_machine, measurements
from reports.tables import DASH, Table, fmt_rate, mode_label, status_cell
from reports.verdict import ratio_interval


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
        cells[Config.COLUMNS.index("mode")] = mode_label(config.framework, config.mode)
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


def _best(m: MachineResults, framework: str, key: tuple) -> Measurement | None:
    """The framework's fastest mode for (arch, device, phase, precision, batch) on machine m."""
    found = [x for c, x in m.measurements.items() if c.framework == framework and x.ok
             and (c.arch, c.device, c.phase, c.precision, c.batch_size) == key]
    return max(found, key=lambda x: x.median) if found else None


def _framework_ratio(tf: Measurement, torch: Measurement) -> str:
    """'1.20 (1.08-1.33; tf.function / eager)': ratio of medians, 95% bootstrap interval over
    the rounds when each side has at least two, and the modes paired."""
    interval = ratio_interval(tf.rounds, torch.rounds)
    spread = f"{interval[0]:.2f}-{interval[1]:.2f}; " if interval else ""
    return (f"{tf.median / torch.median:.2f} ({spread}{mode_label('tf', tf.config.mode)} / "
            f"{mode_label('torch', torch.config.mode)})")


def framework_ratio_table(machines: list[MachineResults]) -> Table:
    """TF img/s divided by torch img/s, each framework's best mode, per configuration that both
    frameworks ran on at least one machine."""
    keys = sorted({(c.arch, c.device, c.phase, c.precision, c.batch_size)
                   for m in machines for c in m.measurements},
                  key=lambda k: (k[0], k[1], k[2], k[4], k[3]))
    rows = []
    for key in keys:
        pairs = [(_best(m, "tf", key), _best(m, "torch", key)) for m in machines]
        if not any(tf and torch for tf, torch in pairs):
            continue
        cells = [key[0], key[1], key[2], key[3], str(key[4])]
        for tf, torch in pairs:
            cells.append(DASH if not (tf and torch) else _framework_ratio(tf, torch))
        rows.append(cells)
    headers = ["arch", "device", "phase", "precision", "batch",
               *(f"TF/torch (95% interval; best modes) [{i}]" for i in range(len(machines)))]
    return Table(headers, rows, ["left"] * 4 + ["right"] * (1 + len(machines)))


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
            "## TF/torch ratio within each machine (each framework's best mode)", "",
            "Comparable across hardware: above 1, TensorFlow is faster on that machine.", "",
            framework_ratio_table(machines).markdown(), ""]
    return "\n".join(out)
