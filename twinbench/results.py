"""Result rows: the schema, atomic writing, and validated reading.

A result row is one JSON object in one file. One file per row (rather than one file per
session) means concurrent writers, such as pytest-xdist workers or several benchmark
processes sharing a results directory, never need to coordinate: each row gets a unique
name, is written to a temporary file in the same directory, flushed to disk, and then
renamed into place with `os.replace`, which is atomic on POSIX. A reader therefore sees a
row completely or not at all, and a process killed mid-write leaves at most a hidden
`*.tmp` file that readers ignore.

Rows are parsed as JSON only (never pickle or eval), and every row is checked against the
schema below before it is written and after it is read, so the reports never have to guess.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import tempfile
import uuid
import warnings
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Iterable

import models
from twinbench.frameworks import DEVICES
from twinbench.frameworks.keras_backends import ARMS
from twinbench.frameworks.keras_backend_worker import MODES as ARM_MODES
from twinbench.frameworks.modes import PHASES, modes_for, mode_names
from twinbench.imports import FRAMEWORKS

# Who a row is about: a framework, or a Keras-backend arm (the Keras twins on Keras 3's torch
# or JAX backend, twinbench/frameworks/keras_backends.py).
ROW_FRAMEWORKS = FRAMEWORKS + tuple(ARMS)

SCHEMA = "twinbench.result/1"

KINDS = ("throughput", "accuracy")
STATUSES = ("ok", "oom", "error")
# Modes renamed since rows were first written: (framework, old name) -> new name. Rows are
# mapped on read (read_row), so that old result directories still load and tabulate.
RENAMED_MODES = {("tf", "eager"): "graph"}

# check_writable refuses a results directory with less free space than this: a full disk
# discovered after hours of training loses the run's rows.
MIN_FREE_BYTES = 10 * 1024 * 1024
# A row is a few kilobytes; anything far larger is not a row (and is not read into memory).
MAX_ROW_BYTES = 8 * 1024 * 1024


class ResultError(Exception):
    """A result row or results location is unusable; the message names the file and the fault."""


# --------------------------------------------------------------------------------------
# Schema
# --------------------------------------------------------------------------------------
# Field specs: name -> (check, description). A check returns True when the value is valid.
# Booleans are excluded from the numeric types on purpose: `True` is an int in Python,
# but a row saying `"batch_size": true` is a bug, not a batch of one.

def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def _nullable(check):
    return lambda v: v is None or check(v)


def _one_of(choices):
    return lambda v: v in choices


class _Registered:
    """A field check against a registry read at check time (a twin registered after this
    module was imported is still accepted); str() lists the names, for error messages."""

    def __init__(self, names: Callable[[], Iterable[str]]):
        self.names = names

    def __call__(self, v) -> bool:
        return v in tuple(self.names())

    def __str__(self) -> str:
        return " | ".join(self.names())


_ARCHS = _Registered(lambda: models.ARCHITECTURES)
_MODES = _Registered(lambda: tuple(dict.fromkeys(mode_names() + ARM_MODES)))


def _is_str(v) -> bool:
    return isinstance(v, str) and v != ""


def _is_nonneg(v) -> bool:
    return _is_num(v) and v >= 0


def _is_positive(v) -> bool:
    return _is_num(v) and v > 0


def _is_fraction(v) -> bool:
    return _is_num(v) and 0.0 <= v <= 1.0


def _is_utc_timestamp(v) -> bool:
    if not isinstance(v, str):
        return False
    try:
        parsed = datetime.fromisoformat(v)
    except ValueError:
        return False
    return parsed.utcoffset() == timedelta(0)


def _is_str_dict(v) -> bool:
    return isinstance(v, dict) and all(isinstance(k, str) and isinstance(x, str) for k, x in v.items())


def _is_rounds(v) -> bool:
    return isinstance(v, list) and all(_is_positive(x) for x in v)


COMMON_FIELDS = {
    "schema": (lambda v: v == SCHEMA, f"the string {SCHEMA!r}"),
    "kind": (_one_of(KINDS), " | ".join(KINDS)),
    "run_id": (_is_str, "non-empty str"),
    "created": (_is_utc_timestamp, "ISO-8601 UTC timestamp"),
    "framework": (_one_of(ROW_FRAMEWORKS), " | ".join(ROW_FRAMEWORKS)),
    "arch": (_ARCHS, _ARCHS),
    "device": (_one_of(DEVICES), " | ".join(DEVICES)),
    "versions": (_is_str_dict, "dict of str -> str"),
    "machine": (lambda v: isinstance(v, dict), "dict (the machine fingerprint)"),
    "determinism": (lambda v: isinstance(v, bool), "bool"),
}

# The machine fields the reports rely on (labels, grouping); the rest is informational.
MACHINE_FIELDS = {
    "id": (_is_str, "non-empty str"),
    "cpu_model": (_is_str, "non-empty str"),
    "cores": (_is_int, "int"),
    "gpu": (lambda v: isinstance(v, list) and all(isinstance(g, dict) for g in v), "list of dicts"),
}

THROUGHPUT_FIELDS = {
    "mode": (_MODES, _MODES),
    "phase": (_one_of(PHASES), " | ".join(PHASES)),
    "batch_size": (lambda v: _is_int(v) and v > 0, "positive int"),
    "status": (_one_of(STATUSES), " | ".join(STATUSES)),
    "error": (_nullable(lambda v: isinstance(v, str)), "str or null"),
    "images_per_s": (_is_rounds, "list of positive numbers (one per round)"),
    "median_images_per_s": (_nullable(_is_positive), "positive number or null"),
    "flop_per_image": (_is_positive, "positive number"),
    "flops_per_s": (_nullable(_is_nonneg), "number >= 0 or null"),
    "ceiling_flops_per_s": (_nullable(_is_positive), "positive number or null"),
    "fraction_of_ceiling": (_nullable(_is_nonneg), "number >= 0 or null"),
    "compile_s": (_nullable(_is_nonneg), "number >= 0 or null"),
    "threads": (_is_int, "int"),
    "precision": (lambda v: isinstance(v, dict), "dict"),
}

EPOCH_FIELDS = {
    "epoch": (_is_int, "int"),
    "loss": (_is_num, "number"),
    "test_accuracy": (_is_fraction, "number in 0..1"),
    "seconds": (_is_nonneg, "number >= 0"),
}

ACCURACY_FIELDS = {
    "recipe": (_is_str, "non-empty str (e.g. keras_cnn_adam, lenet_sgd)"),
    "seed": (_is_int, "int"),
    "data": (lambda v: isinstance(v, dict) and _is_str(v.get("source")) and isinstance(v.get("digest"), str),
             "dict with str 'source' and 'digest'"),
    "epochs": (lambda v: isinstance(v, list) and all(isinstance(e, dict) for e in v), "list of epoch dicts"),
    "final_accuracy": (_is_fraction, "number in 0..1"),
    "threshold": (_nullable(_is_fraction), "number in 0..1 or null"),
    "train_seconds": (_is_nonneg, "number >= 0"),
    "images_per_s": (_is_nonneg, "number >= 0"),
    "time_to_threshold_s": (_nullable(_is_nonneg), "number >= 0 or null"),
    "comparison": (_nullable(lambda v: isinstance(v, str)), "str or null"),
    "initial_weights": (_nullable(lambda v: isinstance(v, str)), "str or null"),
}


def _check_fields(obj: dict, spec: dict, where: str, problems: list[str]) -> None:
    for name, (check, expected) in spec.items():
        if name not in obj:
            problems.append(f"missing field {where}{name!r}")
        elif not check(obj[name]):
            shown = json.dumps(obj[name], default=repr)
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            problems.append(f"field {where}{name!r} should be {expected}, got {shown}")


def upgrade_row(row):
    """A row as this version writes it: old mode names (RENAMED_MODES) get their new name."""
    if isinstance(row, dict) and row.get("kind") == "throughput":
        new = RENAMED_MODES.get((row.get("framework"), row.get("mode")))
        if new is not None:
            row = {**row, "mode": new}
    return row


def row_problems(row) -> list[str]:
    """Every way in which `row` departs from the schema (empty when it is valid)."""
    if not isinstance(row, dict):
        return [f"a result row is a JSON object, got {type(row).__name__}"]
    row = upgrade_row(row)   # an old mode name is valid: it is read as its new name
    problems: list[str] = []
    _check_fields(row, COMMON_FIELDS, "", problems)
    if isinstance(row.get("machine"), dict):
        _check_fields(row["machine"], MACHINE_FIELDS, "machine.", problems)
    kind = row.get("kind")
    if kind == "throughput":
        _check_fields(row, THROUGHPUT_FIELDS, "", problems)
        # An "ok" row without rounds has nothing to report; a failed row keeps its rounds empty
        # or partial, and the tables show its status instead of a number.
        if row.get("status") == "ok" and not row.get("images_per_s"):
            problems.append("status 'ok' needs at least one round in 'images_per_s'")
        if row.get("status") == "ok" and row.get("median_images_per_s") is None:
            problems.append("status 'ok' needs a 'median_images_per_s'")
        framework, mode = row.get("framework"), row.get("mode")
        if framework in ARMS:
            # An arm's step is Keras's own, eager or compiled (jit_compile), on its backend.
            if mode not in ARM_MODES:
                problems.append(f"{framework} has no mode {mode!r} (its modes: "
                                f"{', '.join(ARM_MODES)})")
            if row.get("keras_backend") != ARMS[framework]:
                problems.append(f"a {framework} row needs 'keras_backend': "
                                f"{ARMS[framework]!r}, got {row.get('keras_backend')!r}")
        elif framework in FRAMEWORKS and _MODES(mode) and not any(
                mode in modes_for(framework, d) for d in DEVICES):
            problems.append(f"{framework} has no mode {mode!r} (its modes: "
                            f"{', '.join(dict.fromkeys(m for d in DEVICES for m in modes_for(framework, d)))})")
    elif kind == "accuracy":
        _check_fields(row, ACCURACY_FIELDS, "", problems)
        for i, epoch in enumerate(row.get("epochs") or []):
            if isinstance(epoch, dict):
                _check_fields(epoch, EPOCH_FIELDS, f"epochs[{i}].", problems)
    return problems


def validate_row(row: dict) -> None:
    """Raise ResultError listing every missing or mistyped field of `row`."""
    problems = row_problems(row)
    if problems:
        raise ResultError("invalid result row: " + "; ".join(problems))


# --------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------

def new_run_id() -> str:
    """A run id, one per pytest session: sortable by time, unique across machines."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{uuid.uuid4().hex[:8]}"


def utc_now() -> str:
    """The `created` timestamp format used in rows (ISO-8601, UTC, seconds)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


_UNSAFE = re.compile(r"[^A-Za-z0-9_.]+")


def _file_name(row: dict) -> str:
    parts = [row["kind"], row["framework"], row["arch"], row["device"]]
    if row["kind"] == "throughput":
        parts += [row["mode"], row["phase"], f"b{row['batch_size']}"]
    else:
        parts += [row["recipe"], f"s{row['seed']}"]
    # uuid4 makes the name unique without any coordination between writers.
    stem = "-".join(_UNSAFE.sub("_", str(p)) for p in parts)
    return f"{stem}-{uuid.uuid4().hex}.json"


def write_row(results_dir, row: dict) -> Path:
    """Validate `row` and write it atomically to a new uniquely named file in `results_dir`.

    twinbench.atomic writes it to a hidden `.<name>.<pid>.<random>.tmp` file in the same
    directory, fsyncs it and renames it to `<name>.json`. Readers only look at `*.json`, so
    they never see a partial row.
    """
    from twinbench.atomic import write_bytes

    validate_row(row)
    # allow_nan=False: NaN/Infinity are not JSON, and other tools would refuse the file.
    text = json.dumps(row, indent=1, sort_keys=True, allow_nan=False) + "\n"
    directory = Path(results_dir)
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / _file_name(row)
    write_bytes(final, text.encode("utf-8"))
    return final


def check_writable(results_dir, *, min_free_bytes: int = MIN_FREE_BYTES) -> None:
    """Fail early, before any training starts, when rows could not be written to `results_dir`.

    Creates the directory, writes and removes a probe file, and checks the free space.
    """
    directory = Path(results_dir)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ResultError(f"results directory {directory} cannot be created: {exc.strerror or exc}"
                          f" (choose another location)") from exc
    try:
        fd, probe = tempfile.mkstemp(dir=directory, prefix=".probe-", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ResultError(f"results directory {directory} is not writable: {exc.strerror or exc}"
                          f" (check its permissions or choose another location)") from exc
    free = shutil.disk_usage(directory).free
    if free < min_free_bytes:
        raise ResultError(f"results directory {directory} has only {free / 2**20:.1f} MiB free; "
                          f"at least {min_free_bytes / 2**20:.1f} MiB are needed to write results")


# --------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------

def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def read_row(path) -> dict:
    """Parse and validate one result file; ResultError names the file and the fault."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_ROW_BYTES:
            raise ResultError(f"{path}: {size} bytes is too large for a result row "
                              f"(limit {MAX_ROW_BYTES})")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ResultError(f"{path}: cannot be read: {exc}") from exc
    try:
        row = upgrade_row(json.loads(text, parse_constant=_reject_constant))
    except ValueError as exc:
        raise ResultError(f"{path}: not valid JSON: {exc}") from exc
    problems = row_problems(row)
    if problems:
        raise ResultError(f"{path}: invalid result row: " + "; ".join(problems))
    return row


def result_files(paths: Iterable) -> list[Path]:
    """Expand files and directories (recursively, `*.json`) into a sorted list of files.

    A path that does not exist raises ResultError: a typo must not read as "no results".
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files.extend(sorted(f for f in p.rglob("*.json") if f.is_file()))
        elif p.is_file():
            files.append(p)
        else:
            raise ResultError(f"{p}: no such file or directory")
    return files


def read_rows(paths, *, on_error: str = "raise",
              warn: Callable[[str], None] | None = None) -> list[dict]:
    """Read and validate the rows in `paths` (files and/or directories, recursive `*.json`).

    on_error="raise": the first malformed or schema-invalid file raises ResultError with its path.
    on_error="skip": each such file is reported through `warn(message)` (default:
    `warnings.warn`) and skipped, so one bad file does not hide every other result.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
    report = warn if warn is not None else (lambda message: warnings.warn(message, stacklevel=3))
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    rows: list[dict] = []
    for entry in paths:
        try:
            files = result_files([entry])
        except ResultError as exc:
            if on_error == "raise":
                raise
            report(f"skipped {exc}")
            continue
        for path in files:
            try:
                rows.append(read_row(path))
            except ResultError as exc:
                if on_error == "raise":
                    raise
                report(f"skipped {exc}")
    return dedupe_rows(rows)


def row_key(row: dict) -> str:
    """A row's identity: its row_id (rows written since scale-out carry one), else a digest
    of its content, so that a copied file of an older row is still recognised."""
    if row.get("row_id"):
        return str(row["row_id"])
    return hashlib.sha256(json.dumps(row, sort_keys=True).encode()).hexdigest()


def dedupe_rows(rows: list[dict]) -> list[dict]:
    """Each row once (the first copy), however many directories or copies held it: shards
    gathered into one place, or a directory passed twice, never count a run twice."""
    seen: set[str] = set()
    unique = []
    for row in rows:
        key = row_key(row)
        if key not in seen:
            seen.add(key)
            unique.append(row)
    return unique



def common_fields(run_id: str, determinism: bool, machine: dict | None = None) -> dict:
    """The fields every row shares: schema, run, time, versions and the machine fingerprint.
    (Versions are those of the packages this process has loaded; nothing is imported.)"""
    from twinbench.fingerprint import machine_fingerprint
    from twinbench.imports import loaded_versions
    return {"schema": SCHEMA, "run_id": run_id, "created": utc_now(),
            "versions": loaded_versions(), "machine": machine or machine_fingerprint(),
            "determinism": determinism}
