"""Writing a benchmark's results into a markdown file, one `## ` section per benchmark."""

from __future__ import annotations

from pathlib import Path


def write_section(path: Path, heading: str, section: str) -> None:
    """Replace the section under `heading` (up to the next '## ' heading) with `section`, or append it."""
    lines = path.read_text().splitlines() if path.exists() else ["# Benchmarks", ""]
    start = next((i for i, line in enumerate(lines) if line.strip() == heading), None)
    if start is None:
        lines = lines + ([""] if lines and lines[-1].strip() else []) + section.splitlines()
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        tail = [""] + lines[end:] if end < len(lines) else []
        lines = lines[:start] + section.splitlines() + tail
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines).rstrip() + "\n")


def publish(heading: str, lines: list[str], docs: Path | None) -> None:
    """Print a benchmark's section and, given a markdown file, put it there in place of the old one."""
    text = "\n".join([heading, "", *lines])
    print(text)
    if docs:
        write_section(docs, heading, text)
        print(f"wrote {docs}")
