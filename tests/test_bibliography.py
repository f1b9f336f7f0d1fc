"""The book's citation labels (book/_ext/erc_book_bib.py): author-year, and never two alike."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml
from pybtex.database import parse_file, parse_string
from pybtex.plugin import find_plugin

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "book" / "_ext"))
import erc_book_bib  # noqa: E402


def _labels(bib) -> dict[str, str]:
    """{key: label} as the bibliography page numbers its entries (the style's sorting, then its labels)."""
    style = erc_book_bib.AuthorYearStyle()
    entries = style.sort(bib.entries.values())
    return {e.key: label for e, label in zip(entries, style.label_style.format_labels(entries))}


def test_every_reference_of_the_book_has_its_own_label():
    labels = _labels(parse_file(ROOT / "book" / "references.bib"))
    assert len(set(labels.values())) == len(labels), labels
    # the ERC paper and Klear-Reasoner (GPPO) share first author and year: a / b in the sorted order
    assert labels["su2025klear"] == "Su et al., 2025a" and labels["su2025erc"] == "Su et al., 2025b"
    assert labels["schulman2017ppo"] == "Schulman et al., 2017"


def test_labels_for_one_two_and_three_authors_and_a_triple_collision():
    bib = parse_string("""
    @misc{a, author = {Doe, Jane}, year = {2020}, title = {A}}
    @misc{b, author = {Doe, Jane and Roe, Rick}, year = {2020}, title = {B}}
    @misc{c1, author = {Poe, E. and X, Y and Z, W}, year = {2021}, title = {C one}}
    @misc{c2, author = {Poe, E. and Q, R and S, T}, year = {2021}, title = {C two}}
    @misc{c3, author = {Poe, E. and M, N and O, P}, year = {2021}, title = {C three}}
    """, "bibtex")
    labels = _labels(bib)
    assert labels["a"] == "Doe, 2020" and labels["b"] == "Doe and Roe, 2020"
    assert sorted(labels[k] for k in ("c1", "c2", "c3")) == [f"Poe et al., 2021{s}" for s in "abc"]


def test_the_book_uses_the_style_for_text_and_bibliography():
    erc_book_bib.setup(None)
    assert find_plugin("pybtex.style.formatting", erc_book_bib.STYLE_NAME) is erc_book_bib.AuthorYearStyle
    from sphinxcontrib.bibtex.plugin import find_plugin as find_reference_style

    ref = find_reference_style("sphinxcontrib.bibtex.style.referencing", erc_book_bib.REFERENCE_STYLE_NAME)()
    assert ref.bracket_parenthetical.sep == "; "  # "[Shao et al., 2024; Yu et al., 2025]": the labels hold commas
    config = yaml.safe_load((ROOT / "_config.yml").read_text())["sphinx"]
    assert config["local_extensions"]["erc_book_bib"] == "book/_ext"
    assert config["config"]["bibtex_reference_style"] == erc_book_bib.REFERENCE_STYLE_NAME
    assert config["config"]["bibtex_default_style"] == erc_book_bib.STYLE_NAME
    assert f":style: {erc_book_bib.STYLE_NAME}" in (ROOT / "book" / "bibliography.md").read_text()
