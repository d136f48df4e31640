"""A built dataset as files: one Parquet file (every row with its split and lineage) and, per
split, JSON Lines in OpenAI's chat fine-tuning format ({"messages": [...]} per line)."""

from __future__ import annotations

import hashlib
import io
import json

import pyarrow as pa
import pyarrow.parquet as pq

from genloom.datasets.build import Example, Row

SCHEMA = pa.schema([
    ("row_hash", pa.string()),
    ("split", pa.string()),
    ("messages", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
    ("source", pa.string()),
    ("lineage", pa.string()),  # JSON: request and feedback ids, or file and line
    ("tenant", pa.string()),
    ("user", pa.string()),
])


def content_hash(rows: list[Row]) -> str:
    """The dataset version's identity: its rows' content hashes and splits, in order."""
    digest = hashlib.sha256()
    for r in rows:
        digest.update(f"{r.split}:{r.row_hash}\n".encode())
    return digest.hexdigest()


def to_parquet(rows: list[Row]) -> bytes:
    table = pa.table({
        "row_hash": [r.row_hash for r in rows],
        "split": [r.split for r in rows],
        "messages": [list(r.example.messages) for r in rows],
        "source": [str(r.example.lineage.get("source", "")) for r in rows],
        "lineage": [json.dumps(r.example.lineage, sort_keys=True, separators=(",", ":")) for r in rows],
        "tenant": [r.example.tenant for r in rows],
        "user": [r.example.user for r in rows],
    }, schema=SCHEMA)
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


def from_parquet(data: bytes) -> list[Row]:
    table = pq.read_table(io.BytesIO(data))
    out = []
    for r in table.to_pylist():
        example = Example(messages=tuple({"role": m["role"], "content": m["content"]} for m in r["messages"]),
                          lineage=json.loads(r["lineage"]), tenant=r["tenant"], user=r["user"])
        out.append(Row(example=example, split=r["split"], row_hash=r["row_hash"]))
    return out


def to_jsonl(rows: list[Row], split: str | None = None) -> bytes:
    """OpenAI's chat fine-tuning format; one split, or every row."""
    lines = [json.dumps({"messages": list(r.example.messages)}, ensure_ascii=False)
             for r in rows if split is None or r.split == split]
    return ("\n".join(lines) + "\n").encode() if lines else b""
