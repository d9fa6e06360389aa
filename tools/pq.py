"""Look inside Parquet data from the command line.

    python -m tml.tools.pq PATH schema|head|distinct|count [--num N] [--columns a,b]
    tml-pq PATH ...   (the same, once the package is installed)

PATH is a file, a glob, a directory (every *.parquet below it) or any fsspec URL (gs://, s3://,
memory://). `schema` and `count` read only the files' footers. `head` and `distinct` read the first
N rows of the chosen columns and stop; they refuse reads whose decoded size would exceed --max-mb.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import shutil
import sys
from collections import Counter
from typing import Any, Iterator, Optional, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from tml.common import parquet
from tml.common.entry_point import CommandError, call_command, command_parser, run_command
from tml.common.parquet import list_parquet_files
from tml.core.errors import DataError

COMMANDS = ("schema", "head", "distinct", "count")
DEFAULT_NUM = {"head": 10, "distinct": 1000}
DEFAULT_MAX_MB = 500.0
MAX_CELL_CHARS = 40
LIST_ITEMS_SHOWN = 3
DISTINCT_VALUES_SHOWN = 50
READ_BUFFER_BYTES = 1 << 20


class PqError(CommandError):
    """A problem with the user's input; printed as `error: ...` without a traceback (exit 1)."""


# ----------------------------------------------------------------------------- files


def resolve_files(path: str) -> list[str]:
    """The Parquet files PATH names: a glob's matches, a directory's *.parquet files, or the file."""
    try:
        return list_parquet_files(path)
    except FileNotFoundError as error:
        raise PqError(str(error)) from None


@contextlib.contextmanager
def open_parquet(path: str) -> Iterator[pq.ParquetFile]:
    """The shared opener, reading column chunks in small buffered pieces; unreadable files are the
    user's problem, reported without a traceback."""
    with contextlib.ExitStack() as stack:
        try:
            parquet_file = stack.enter_context(parquet.open_parquet(path, buffer_size=READ_BUFFER_BYTES))
        except DataError as error:
            raise PqError(f"'{path}' is not a readable Parquet file: {error}") from error
        yield parquet_file


def read_metadata(path: str) -> tuple[pa.Schema, pq.FileMetaData]:
    with open_parquet(path) as parquet_file:
        return parquet_file.schema_arrow, parquet_file.metadata


# ----------------------------------------------------------------------------- columns


def parse_columns(text: Optional[str]) -> Optional[list[str]]:
    if text is None:
        return None
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise PqError("--columns is empty; give comma-separated column names, e.g. --columns label,weight")
    return names


def check_columns(requested: Optional[list[str]], schema: pa.Schema, path: str) -> list[str]:
    """The requested columns (all when None), after checking that `path` has each of them."""
    available = list(schema.names)
    if requested is None:
        return available
    unknown = [name for name in requested if name not in available]
    if unknown:
        quoted = ", ".join(f"'{name}'" for name in unknown)
        noun = "column" if len(unknown) == 1 else "columns"
        raise PqError(f"unknown {noun} {quoted} in '{path}'; available columns: {', '.join(available)}")
    return requested


def decoded_bytes_per_row(metadata: pq.FileMetaData, columns: Sequence[str]) -> float:
    """Uncompressed bytes per row of `columns`, from the footer's column-chunk statistics."""
    if metadata.num_rows == 0:
        return 0.0
    wanted = set(columns)
    total = 0
    for group_index in range(metadata.num_row_groups):
        group = metadata.row_group(group_index)
        for column_index in range(group.num_columns):
            chunk = group.column(column_index)
            top_level = chunk.path_in_schema.split(".", 1)[0]
            if chunk.path_in_schema in wanted or top_level in wanted:
                total += chunk.total_uncompressed_size
    return total / metadata.num_rows


# ----------------------------------------------------------------------------- reading rows


def read_first_rows(
    files: Sequence[str], columns: Optional[list[str]], num: int, max_bytes: float
) -> tuple[list[str], list[dict[str, Any]]]:
    """The column names and the first `num` rows (as Python values) across `files`, in order.

    Each file's footer is checked before its rows are read: the rows it would contribute, times
    its decoded bytes per row, count against `max_bytes`, so a huge read fails before it starts.
    """
    names: list[str] = []
    rows: list[dict[str, Any]] = []
    estimated_bytes = 0.0
    for path in files:
        if len(rows) >= num:
            break
        with open_parquet(path) as parquet_file:
            file_names = check_columns(columns, parquet_file.schema_arrow, path)
            names.extend(name for name in file_names if name not in names)
            metadata = parquet_file.metadata
            wanted = min(num - len(rows), metadata.num_rows)
            estimated_bytes += wanted * decoded_bytes_per_row(metadata, file_names)
            if estimated_bytes > max_bytes:
                raise PqError(
                    f"reading {num:,} rows of {len(file_names)} column(s) would decode at least "
                    f"{estimated_bytes / 1e6:,.0f} MB (limit {max_bytes / 1e6:,.0f} MB); ask for fewer rows "
                    "(--num) or columns (--columns), or raise --max-mb"
                )
            if wanted == 0:
                continue
            for batch in parquet_file.iter_batches(batch_size=min(wanted, 65536), columns=file_names):
                rows.extend(batch.slice(0, num - len(rows)).to_pylist())
                if len(rows) >= num:
                    break
    return names, rows


# ----------------------------------------------------------------------------- formatting


def format_value(value: Any, max_chars: int = MAX_CELL_CHARS) -> str:
    """A one-line, bounded rendering: long lists become `[0.1, 0.2, 0.3, ... (6000)]`."""
    return _shorten(_render(value), max_chars)


def _render(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        text = f"{value:.6g}"
        # Keep floats recognisable next to ints: 2.0, not 2.
        return text + ".0" if text.lstrip("-").isdigit() else text
    if isinstance(value, (list, tuple)):
        shown = ", ".join(_render(item) for item in value[:LIST_ITEMS_SHOWN])
        if len(value) > LIST_ITEMS_SHOWN + 1:
            return f"[{shown}, ... ({len(value)})]"
        return "[" + ", ".join(_render(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key}: {_render(item)}" for key, item in value.items()) + "}"
    if isinstance(value, bytes):
        return repr(value)
    return str(value).replace("\r", "\\r").replace("\n", "\\n").replace("\t", "\\t")


def _shorten(text: str, max_chars: int) -> str:
    return text if len(text) <= max_chars else text[: max_chars - 3] + "..."


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]], right_aligned: Sequence[int] = ()) -> list[str]:
    widths = [max([len(header)] + [len(row[i]) for row in rows]) for i, header in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        padded = (
            cell.rjust(width) if index in right_aligned else cell.ljust(width)
            for index, (cell, width) in enumerate(zip(cells, widths))
        )
        return "  ".join(padded).rstrip()

    return [line(headers), line(["-" * width for width in widths]), *(line(row) for row in rows)]


def format_records(names: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """One block per row, one line per column: for rows too wide for the terminal."""
    width = max(len(name) for name in names)
    lines = []
    for index, row in enumerate(rows):
        lines.append(f"-[ row {index} ]" + "-" * max(3, width - 6))
        lines.extend(f"{name.ljust(width)} | {cell}" for name, cell in zip(names, row))
    return lines


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _numeric_columns(names: Sequence[str], rows: Sequence[dict[str, Any]]) -> list[int]:
    numeric = []
    for index, name in enumerate(names):
        values = [row.get(name) for row in rows if row.get(name) is not None]
        if values and all(_is_number(value) for value in values):
            numeric.append(index)
    return numeric


# ----------------------------------------------------------------------------- commands


def command_schema(files: Sequence[str], columns: Optional[list[str]]) -> list[str]:
    schema, _ = read_metadata(files[0])
    names = check_columns(columns, schema, files[0])
    table = format_table(["column", "type"], [[name, str(schema.field(name).type)] for name in names])
    total_rows, differing = 0, []
    for path in files:
        file_schema, metadata = read_metadata(path)
        total_rows += metadata.num_rows
        if not file_schema.equals(schema):
            differing.append(path)
    summary = [f"{len(files):,} file(s), {total_rows:,} rows (from Parquet metadata); schema of '{files[0]}'"]
    if differing:
        summary.append(f"note: {len(differing)} file(s) have a different schema, e.g. '{differing[0]}'")
    return table + [""] + summary


def command_count(files: Sequence[str]) -> list[str]:
    rows, total_rows, total_groups = [], 0, 0
    for path in files:
        _, metadata = read_metadata(path)
        total_rows += metadata.num_rows
        total_groups += metadata.num_row_groups
        rows.append([path, f"{metadata.num_rows:,}", f"{metadata.num_row_groups:,}"])
    rows.append([f"total ({len(files):,} files)", f"{total_rows:,}", f"{total_groups:,}"])
    return format_table(["file", "rows", "row groups"], rows, right_aligned=(1, 2))


def command_head(
    files: Sequence[str], columns: Optional[list[str]], num: int, max_bytes: float, layout: str
) -> list[str]:
    names, rows = read_first_rows(files, columns, num, max_bytes)
    cells = [[format_value(row.get(name)) for name in names] for row in rows]
    table = format_table(names, cells, right_aligned=_numeric_columns(names, rows))
    too_wide = max(len(line) for line in table) > shutil.get_terminal_size((120, 24)).columns
    if rows and (layout == "vertical" or (layout == "auto" and too_wide)):
        body = format_records(names, cells)
    else:
        body = table
    return body + [f"({len(rows):,} row(s))"]


def command_distinct(files: Sequence[str], columns: Optional[list[str]], num: int, max_bytes: float) -> list[str]:
    names, rows = read_first_rows(files, columns, num, max_bytes)
    lines: list[str] = []
    for name in names:
        counts: Counter = Counter()
        first_seen: dict[Any, Any] = {}
        for row in rows:
            value = row.get(name)
            key = _hashable(value)
            counts[key] += 1
            first_seen.setdefault(key, value)
        order = sorted(counts, key=lambda key: -counts[key])  # stable: ties keep first-seen order
        shown = order[:DISTINCT_VALUES_SHOWN]
        lines.append(f"{name}: {len(counts):,} distinct value(s) in {len(rows):,} row(s)")
        value_rows = [[f"{counts[key]:,}", format_value(first_seen[key])] for key in shown]
        table = format_table(["count", "value"], value_rows, right_aligned=(0,))
        lines.extend("  " + line for line in table)
        if len(order) > len(shown):
            lines.append(f"  ... {len(order) - len(shown):,} more value(s)")
        lines.append("")
    return lines[:-1] if lines else lines


def _hashable(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return ("nan",)
    if isinstance(value, (list, tuple)):
        return ("list", tuple(_hashable(item) for item in value))
    if isinstance(value, dict):
        return ("dict", tuple((key, _hashable(item)) for key, item in value.items()))
    return value


# ----------------------------------------------------------------------------- CLI


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser("Inspect Parquet files: schema, first rows, distinct values, row counts.", config="none")
    parser.add_argument("path", help="a file, a glob, a directory, or an fsspec URL such as gs://bucket/data/*.parquet")
    parser.add_argument(
        "command",
        choices=COMMANDS,
        help="schema: columns and types; head: first rows; distinct: values per column; count: rows per file",
    )
    parser.add_argument(
        "--num", type=_positive_int, default=None,
        help=f"rows to read for head (default {DEFAULT_NUM['head']}) and distinct (default {DEFAULT_NUM['distinct']})",
    )
    parser.add_argument("--columns", default=None, help="comma-separated column names (default: all)")
    parser.add_argument(
        "--max-mb", type=_positive_float, default=DEFAULT_MAX_MB,
        help="refuse head/distinct reads whose decoded size is estimated above this (default %(default)s)",
    )
    parser.add_argument(
        "--layout", choices=("auto", "table", "vertical"), default="auto",
        help="head output: a table, one block per row, or a table unless too wide for the terminal",
    )
    return parser


def report(args: argparse.Namespace) -> list[str]:
    """The lines the command prints."""
    files = resolve_files(args.path)
    columns = parse_columns(args.columns)
    num = args.num if args.num is not None else DEFAULT_NUM.get(args.command, 0)
    max_bytes = args.max_mb * 1e6
    if args.command == "schema":
        return command_schema(files, columns)
    if args.command == "count":
        return command_count(files)
    if args.command == "head":
        return command_head(files, columns, num, max_bytes, args.layout)
    return command_distinct(files, columns, num, max_bytes)


def run(args: argparse.Namespace) -> int:
    try:
        lines = report(args)
    except (OSError, ImportError) as error:  # e.g. a glob matched a directory, an fsspec extra is missing
        raise PqError(str(error)) from None
    try:
        sys.stdout.write("\n".join(lines) + "\n")
        sys.stdout.flush()
    except BrokenPipeError:  # `... | head`: the reader left; not an error
        # Point stdout at /dev/null so the interpreter's final flush does not complain again.
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The exit code (also the `tml-pq` console script's): 0, 1 for a bad path or column, 2 for a
    bad command line (argparse has printed why)."""
    try:
        return call_command(build_parser(), run, argv)
    except SystemExit as exit_request:  # --help, or a usage error argparse has already printed
        return int(exit_request.code or 0)


if __name__ == "__main__":
    run_command(build_parser(), run)
