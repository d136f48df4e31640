"""Write the first- and last-name lists the PII scanner's PERSON recogniser reads, taken from
Faker's person providers (MIT licence, copyright Daniele Faraglia; Faker's en_US lists come from
the US Census and SSA public data). Faker is needed only here, not at run time:

    pip install faker && python tools/guardrails/build_names.py

The output is deterministic for one Faker version (sorted, deduplicated)."""

from __future__ import annotations

import importlib
from pathlib import Path

import faker

OUT = Path(__file__).resolve().parents[2] / "src/genloom/guardrails/models"
# Locales whose first names the recogniser knows. The PII benchmark also draws names from
# locales left out here (it_IT, pt_BR, nl_NL), to measure the cue-based rules on their own.
FIRST_NAME_LOCALES = ("en_US", "en_GB", "en_IE", "en_NZ", "en_IN", "de_DE", "fr_FR", "es_ES")
# Surnames only confirm a first name that is also an ordinary word ("Will", "May", "Grace").
LAST_NAME_LOCALES = ("en_US", "en_GB")


def names(locales: tuple[str, ...], attrs: tuple[str, ...]) -> list[str]:
    found: set[str] = set()
    for locale in locales:
        provider = importlib.import_module(f"faker.providers.person.{locale}").Provider
        for attr in attrs:
            found.update(getattr(provider, attr, None) or ())
    # One word, starting with a capital: what the recogniser can match.
    return sorted(n for n in found if n.isalpha() and n[0].isupper() and len(n) >= 2)


def write(path: Path, header: str, items: list[str]) -> None:
    path.write_text(header + "\n".join(items) + "\n", encoding="utf-8")
    print(f"{path}: {len(items)} names, {path.stat().st_size} bytes")


def main() -> None:
    header = (
        f"# From Faker {faker.VERSION} (https://pypi.org/project/Faker/), MIT licence,\n"
        "# Copyright (c) 2012 Daniele Faraglia. Rebuilt by tools/guardrails/build_names.py.\n"
    )
    first = names(FIRST_NAME_LOCALES, ("first_names", "first_names_female", "first_names_male"))
    last = names(LAST_NAME_LOCALES, ("last_names",))
    write(OUT / "first_names.txt", header + f"# Locales: {', '.join(FIRST_NAME_LOCALES)}\n", first)
    write(OUT / "last_names.txt", header + f"# Locales: {', '.join(LAST_NAME_LOCALES)}\n", last)


if __name__ == "__main__":
    main()
