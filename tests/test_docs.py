"""The defaults the user pages state are the schema's: every Markdown table with a `default` column, for
the settings runs are compared by (the slice grid, training and sampling steps, guidance, the start).
docs/running.md's "Defaults" table states each of them."""

import re

import pytest
import yaml

from conftest import ROOT
from midiffusion.config import default

PAGES = ["README.md", "config/README.md",
         *(f"docs/{path.name}" for path in sorted((ROOT / "docs").glob("*.md")) if path.name != "history.md")]
PINNED = ["slices.size", "diffusion.steps", "sampling.steps", "sampling.guidance_scale", "sampling.start",
          "sampling.start_t0"]


def cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def value(text: str):
    """A documented value as the schema writes it: code marks, remarks in brackets, thousands commas and what
    follows the value left out ("`atlas_match`" -> atlas_match, "2,500" -> 2500, "64 x 64" -> 64, "0.1 T" -> 0.1)."""
    words = re.sub(r"(?<=\d),(?=\d{3})", "", re.sub(r"`|\(.*?\)", "", text)).split()
    return yaml.safe_load(words[0]) if words else None


def documented_defaults(page: str) -> list[tuple[str, object, int]]:
    """(key, documented value, line number) for every key of a table row whose header has a `default` column.
    A row may list several keys of one section (`diffusion.batch_size`, `steps`) and their values, ", " apart;
    a key whose value cannot be told apart gets None."""
    found, column = [], None
    for number, line in enumerate((ROOT / page).read_text().splitlines(), start=1):
        if not line.startswith("|"):
            column = None
            continue
        row = cells(line)
        if column is None:  # the table's header
            column = next((i for i, cell in enumerate(row) if cell.lower() == "default"), -1)
            continue
        names = re.findall(r"`([a-z0-9_.]+)`", row[0])
        if column < 0 or not names or "." not in names[0]:
            continue
        section = names[0].split(".")[0]
        keys = [name if "." in name else f"{section}.{name}" for name in names]
        values = re.split(r",\s+", row[column])
        if len(values) != len(keys):
            values = [None] * len(keys)
        found += [(key, None if text is None else value(text), number) for key, text in zip(keys, values)]
    return found


def same(documented, schema) -> bool:
    if isinstance(schema, (int, float)) and not isinstance(schema, bool):
        return isinstance(documented, (int, float)) and documented == schema
    return str(documented).lower() == str(schema).lower()


def test_running_states_every_pinned_default():
    assert set(PINNED) <= {key for key, _, _ in documented_defaults("docs/running.md")}


@pytest.mark.parametrize("page", PAGES)
def test_documented_defaults_are_the_schemas(page):
    wrong = [f"{page}:{number}: {key} is documented as {documented!r}, the schema's default is "
             f"{default(*key.split('.'))!r}"
             for key, documented, number in documented_defaults(page)
             if key in PINNED and not same(documented, default(*key.split(".")))]
    assert not wrong, "\n".join(wrong)
