"""The chapters' code as the reader sees it: every line the rendered page shows or lets the reader expand fits in
88 columns (no horizontal scrolling in a code cell of the book's width, as in d2l.ai)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
CHAPTERS = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
MAX_COLUMNS = 88


def overlong_lines(nb, max_columns: int = MAX_COLUMNS) -> list[tuple[str, int, int]]:
    """(cell id, line number from 1, length) of every code line over ``max_columns`` in cells the book shows
    (every code cell except those tagged ``remove-cell``: untagged, ``hide-input``, ``hide-cell``,
    ``parameters``)."""
    out = []
    for cell in nb.cells:
        if cell.cell_type != "code" or "remove-cell" in cell.metadata.get("tags", []):
            continue
        for i, line in enumerate(cell.source.split("\n"), 1):
            if len(line) > max_columns:
                out.append((cell.get("id", "?"), i, len(line)))
    return out


def test_the_chapters_are_found():
    assert [p.name[:2] for p in CHAPTERS] == ["01", "02", "03", "04", "05", "06", "07", "08"]


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_shown_code_fits_88_columns(path):
    nb = nbformat.read(path, as_version=4)
    assert not overlong_lines(nb), f"{path.name}: (cell id, line, length) over {MAX_COLUMNS}: {overlong_lines(nb)}"


def test_overlong_lines_skips_only_removed_cells():
    long = "x = " + "1 + " * 30 + "1"
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell(long, id="shown"),
        nbformat.v4.new_code_cell(long, id="hidden-input", metadata={"tags": ["hide-input"]}),
        nbformat.v4.new_code_cell(long, id="params", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(long, id="removed", metadata={"tags": ["remove-cell"]}),
        nbformat.v4.new_markdown_cell(long, id="prose"),
        nbformat.v4.new_code_cell("y = 1\n" + "#" * 88, id="fits"),
    ])
    assert overlong_lines(nb) == [("shown", 1, len(long)), ("hidden-input", 1, len(long)),
                                  ("params", 1, len(long))]
