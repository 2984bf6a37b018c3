"""Tables for people that never cut a cell, whatever the terminal's width.

rich shrinks a table that is wider than the console and cuts its cells with an ellipsis, numbers
included. `Fit` instead prints the table as it is where it fits; else folds it into several
tables, each repeating the leading key columns (a row's name) with as many of the other columns
as fit unwrapped (a part of one column may wrap its cells at spaces); where even that does not
fit, it prints one cell per line. Every table a command prints goes through it; `--json` keeps
the full record.
"""
from __future__ import annotations

import copy
from typing import Any, Iterator, List, Sequence


class Fit:
    """A rich renderable: `table` folded to the console width (see the module docstring).
    `keys` leading columns name a row and are repeated in every part."""

    def __init__(self, table: Any, keys: int = 1) -> None:
        self.table = table
        self.keys = max(1, min(keys, len(table.columns)))

    def __rich_console__(self, console: Any, options: Any) -> Iterator[Any]:
        width = options.max_width
        if _measure(console, options, self.table).maximum <= width:
            yield self.table
            return
        keys, rest = list(range(self.keys)), list(range(self.keys, len(self.table.columns)))
        parts: List[List[int]] = []
        for index in rest:  # greedy: each part as wide as fits without wrapping a cell
            if parts and _measure(console, options, _part(self.table, keys + parts[-1] + [index])).maximum <= width:
                parts[-1].append(index)
            else:
                parts.append([index])
        if any(_measure(console, options, _part(self.table, keys + part)).minimum > width for part in parts):
            yield _stacked(self.table)
            return
        for number, part in enumerate(parts):
            yield _part(self.table, keys + part, title=number == 0, caption=number == len(parts) - 1)


def _measure(console: Any, options: Any, table: Any) -> Any:
    """The table's (minimum, maximum) width with no console limit: minimum wraps every cell at
    its spaces, maximum wraps none."""
    from rich.measure import Measurement

    return Measurement.get(console, options.update_width(10**6), table)


def _part(table: Any, columns: Sequence[int], title: bool = False, caption: bool = False) -> Any:
    """A copy of `table` with only `columns`; the title on the first part, the caption on the last."""
    part = copy.copy(table)
    part.columns = [copy.copy(table.columns[i]) for i in columns]
    for index, column in enumerate(part.columns):
        column._index = index  # rich pads the first and last column by position
    part.title = table.title if title else None
    part.caption = table.caption if caption else None
    return part


def _stacked(table: Any) -> Any:
    """One block per row, a blank line apart: a `header  value` line per column (values wrap at
    spaces; only a single word wider than the terminal is folded onto the next line, never cut)."""
    from rich.console import Group
    from rich.table import Table

    blocks: List[Any] = [table.title] if table.title else []
    headers = [str(column.header) if table.show_header else "" for column in table.columns]
    for row in range(table.row_count):
        grid = Table.grid(padding=(0, 1))
        grid.add_column(no_wrap=True, style="bold")
        grid.add_column(overflow="fold")
        for header, column in zip(headers, table.columns):
            grid.add_row(header, column._cells[row])
        blocks += [grid, ""]
    if table.caption:
        blocks.append(table.caption)
    return Group(*blocks)
