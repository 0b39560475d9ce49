"""Example plugin in Python: statistics over the CSV files of the read-only
folder granted as /data.

``csv_summary`` describes every column of one file or of all of them
(numbers: min, max, mean, median, standard deviation; text: distinct values
and the most common ones), reporting progress file by file and stopping
early when cancelled. ``csv_group`` aggregates one numeric column per value
of another (total revenue per region, mean temperature per city).
"""

import csv
import heapq  # noqa: F401 (Counter.most_common imports it lazily; see below)
import os
import statistics
import time
from collections import Counter, defaultdict

from toolhost_plugin import (
    Failed,
    InvalidArguments,
    Output,
    Tool,  # noqa: F401 (componentize-py exports it)
    cancelled,
    tool,
    update,
)

# componentize-py keeps only the modules imported while it builds the
# component, so a module the standard library imports lazily at call time
# (heapq above) must be imported here.

ROOT = "/data"
# Files larger than this are refused: the instance has 128 MiB by default.
MAX_FILE_SIZE = 8 << 20
MAX_DELAY_MS = 1000
TOP_VALUES = 3
STATS = ["count", "sum", "mean", "median", "min", "max"]


def resolve(name):
    """The path of ``name`` under /data; a name that climbs out is refused."""
    rel = name.strip("/")
    if rel.startswith("data/"):
        rel = rel[len("data/"):]
    if not rel or any(part == ".." for part in rel.replace("\\", "/").split("/")):
        raise InvalidArguments(f"file must be a path inside {ROOT}, like sales.csv")
    return os.path.join(ROOT, rel), rel


def csv_files():
    """Every .csv file under /data, relative to it, sorted."""
    found = []
    try:
        for dirpath, dirnames, filenames in os.walk(ROOT):
            dirnames.sort()
            for name in sorted(filenames):
                if name.lower().endswith(".csv"):
                    found.append(os.path.relpath(os.path.join(dirpath, name), ROOT))
    except OSError as e:
        raise Failed(f"cannot read {ROOT}: {e} (is it granted in the plugin manifest?)")
    return found


def read_rows(path, rel):
    """The header and rows of a CSV file, or a tool error saying why not."""
    try:
        if os.path.getsize(path) > MAX_FILE_SIZE:
            raise Failed(f"{rel} is larger than {MAX_FILE_SIZE >> 20} MiB")
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except FileNotFoundError:
        raise Failed(f"{rel} does not exist in {ROOT}; csv_summary without a file lists them")
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise Failed(f"cannot read {rel} as CSV: {e}")
    if not rows:
        raise Failed(f"{rel} is empty")
    return rows[0], rows[1:]


def number(text):
    try:
        return float(text)
    except ValueError:
        return None


def describe_column(values):
    """Statistics of one column: numeric when every present value is a number."""
    present = [v.strip() for v in values if v.strip() != ""]
    missing = len(values) - len(present)
    numbers = [number(v) for v in present]
    if present and all(n is not None for n in numbers):
        return {
            "type": "number",
            "count": len(numbers),
            "missing": missing,
            "min": min(numbers),
            "max": max(numbers),
            "mean": round(statistics.fmean(numbers), 4),
            "median": statistics.median(numbers),
            "stdev": round(statistics.stdev(numbers), 4) if len(numbers) > 1 else 0.0,
        }
    counts = Counter(present)
    return {
        "type": "text",
        "count": len(present),
        "missing": missing,
        "distinct": len(counts),
        "top": [[v, n] for v, n in counts.most_common(TOP_VALUES)],
    }


def summarise(name):
    path, rel = resolve(name)
    header, rows = read_rows(path, rel)
    columns = {}
    for i, name in enumerate(header):
        columns[name] = describe_column([row[i] if i < len(row) else "" for row in rows])
    return {"file": rel, "rows": len(rows), "columns": columns}


def sentence(summary):
    parts = []
    for name, col in summary["columns"].items():
        if col["type"] == "number":
            parts.append(f"{name} {col['min']:g}..{col['max']:g} (mean {col['mean']:g})")
        else:
            parts.append(f"{name} ({col['distinct']} distinct)")
    missing = sum(c["missing"] for c in summary["columns"].values())
    gaps = f", {missing} missing values" if missing else ""
    return f"{summary['file']}: {summary['rows']} rows{gaps}; " + ", ".join(parts) + "."


def pause(ms):
    """Sleeps ``ms`` milliseconds in short steps; True if cancelled meanwhile."""
    end = time.monotonic() + ms / 1000
    while time.monotonic() < end:
        if cancelled():
            return True
        time.sleep(min(0.02, max(0.0, end - time.monotonic())))
    return cancelled()


@tool(
    "csv_summary",
    "Describes the columns of the CSV files under /data (or of one of them): "
    "min, max, mean, median and standard deviation of numeric columns, distinct "
    "and most common values of text columns. Reports progress file by file; can "
    "be cancelled, and then returns what it has so far.",
    {
        "type": "object",
        "properties": {
            "file": {
                "type": ["string", "null"],
                "description": "A CSV file relative to /data; all of them when left out.",
            },
            "delay_ms": {
                "type": ["integer", "null"],
                "minimum": 0,
                "maximum": MAX_DELAY_MS,
                "default": 0,
                "description": "An artificial pause after each file, so progress is visible in demos.",
            },
        },
        "required": [],
    },
    on_duplicate="reject",
    duplicate_scope="name-and-arguments",
    cancellable=True,
)
def csv_summary(args):
    files = [resolve(args["file"])[1]] if "file" in args else csv_files()
    if not files:
        raise Failed(f"there are no .csv files in {ROOT}")
    summaries = []
    stopped = False
    for i, rel in enumerate(files, start=1):
        if cancelled():
            stopped = True
            break
        summaries.append(summarise(rel))
        if i < len(files):
            update(f"summarised {i} of {len(files)} files: {rel} ({summaries[-1]['rows']} rows)")
            if args["delay_ms"] and pause(args["delay_ms"]):
                stopped = True
                break
    text = " ".join(sentence(s) for s in summaries)
    if stopped:
        text = f"cancelled after {len(summaries)} of {len(files)} files. {text}"
    return Output(text, {"files": summaries, "cancelled": stopped})


@tool(
    "csv_group",
    "Aggregates a numeric column of a CSV file under /data per value of another "
    "column, e.g. total revenue per region: count, sum, mean, median, min or max.",
    {
        "type": "object",
        "properties": {
            "file": {"type": "string", "description": "A CSV file relative to /data."},
            "by": {"type": "string", "description": "The column to group by."},
            "column": {"type": "string", "description": "The numeric column to aggregate."},
            # Optional: null (which strict-mode clients send) means left out.
            "stat": {
                "anyOf": [{"type": "string", "enum": STATS}, {"type": "null"}],
                "default": "sum",
                "description": "The aggregate to compute per group.",
            },
        },
        "required": ["file", "by", "column"],
    },
)
def csv_group(args):
    path, rel = resolve(args["file"])
    header, rows = read_rows(path, rel)
    for key in ("by", "column"):
        if args[key] not in header:
            raise InvalidArguments(
                f"{rel} has no column {args[key]!r}; its columns are {', '.join(header)}"
            )
    by, col = header.index(args["by"]), header.index(args["column"])
    groups = defaultdict(list)
    for line, row in enumerate(rows, start=2):
        if max(by, col) >= len(row) or row[col].strip() == "":
            continue
        value = number(row[col])
        if value is None:
            raise InvalidArguments(
                f"column {args['column']!r} is not numeric: {row[col]!r} on line {line} of {rel}"
            )
        groups[row[by]].append(value)
    stat = args["stat"]
    aggregate = {
        "count": len,
        "sum": lambda v: round(sum(v), 4),
        "mean": lambda v: round(statistics.fmean(v), 4),
        "median": statistics.median,
        "min": min,
        "max": max,
    }[stat]
    result = {group: aggregate(values) for group, values in sorted(groups.items())}
    listed = ", ".join(f"{g} {v:g}" for g, v in result.items())
    return Output(
        f"{stat} of {args['column']} by {args['by']} in {rel}: {listed}.",
        {"file": rel, "by": args["by"], "column": args["column"], "stat": stat, "groups": result},
    )
