"""Local Sphinx extension: author-year citation labels that are never ambiguous.

sphinxcontrib-bibtex's ``author_year`` reference style writes "Su et al., 2025" for every 2025 paper whose first
author is Su and that has more than two authors, so the ERC paper and Klear-Reasoner (GPPO) shared one label.
This extension registers the pybtex formatting style ``erc_author_year``: pybtex's ``plain`` style whose labels
are "Last", "Last and Last" or "Last et al." followed by the year, with a, b, ... appended (in the bibliography's
sorted order) when two entries would get the same label. The referencing style ``erc_label`` cites those labels
("[Su et al., 2025b]"; several in one bracket separated by semicolons, since each label holds a comma) and the
bibliography lists them in front of each entry, so the two agree.
"""

from __future__ import annotations

import string
from collections import Counter
from dataclasses import dataclass, field

from pybtex.plugin import register_plugin
from pybtex.style.formatting.plain import Style as PlainStyle
from pybtex.style.labels import BaseLabelStyle
from sphinxcontrib.bibtex.plugin import register_plugin as register_reference_style
from sphinxcontrib.bibtex.style.referencing import BracketStyle
from sphinxcontrib.bibtex.style.referencing.label import LabelReferenceStyle

STYLE_NAME = "erc_author_year"
REFERENCE_STYLE_NAME = "erc_label"


def _authors(entry) -> str:
    """"Last", "Last and Last" or "Last et al." of the entry's authors (editors if none; the key if neither)."""
    people = entry.persons.get("author") or entry.persons.get("editor") or []
    last = [" ".join(p.last_names) for p in people]
    if not last:
        return entry.key
    return last[0] if len(last) == 1 else " and ".join(last) if len(last) == 2 else f"{last[0]} et al."


class AuthorYearLabelStyle(BaseLabelStyle):
    """Labels "Su et al., 2025"; equal labels get a, b, ... in the order of the sorted entries."""

    def format_labels(self, sorted_entries):
        entries = list(sorted_entries)
        base = [f"{_authors(e)}, {e.fields.get('year', 'n.d.')}" for e in entries]
        count, seen = Counter(base), Counter()
        for label in base:
            if count[label] == 1:
                yield label
            else:
                yield label + string.ascii_lowercase[seen[label]]
                seen[label] += 1


class AuthorYearStyle(PlainStyle):
    """pybtex's plain bibliography style with :class:`AuthorYearLabelStyle` labels."""

    default_label_style = AuthorYearLabelStyle


def _semicolons() -> BracketStyle:
    return BracketStyle(sep="; ")


@dataclass
class LabelReferenceSemicolonStyle(LabelReferenceStyle):
    """sphinxcontrib-bibtex's ``label`` referencing with "; " between the labels of one citation."""

    bracket_parenthetical: BracketStyle = field(default_factory=_semicolons)
    bracket_textual: BracketStyle = field(default_factory=_semicolons)
    bracket_label: BracketStyle = field(default_factory=_semicolons)


def setup(app):
    register_plugin("pybtex.style.formatting", STYLE_NAME, AuthorYearStyle)
    register_reference_style("sphinxcontrib.bibtex.style.referencing", REFERENCE_STYLE_NAME,
                             LabelReferenceSemicolonStyle)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
