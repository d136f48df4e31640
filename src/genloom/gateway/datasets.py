"""Datasets for fine-tuning, built from feedback, logged requests or an uploaded JSONL file.

A build reads its source, turns what it selects into conversations (`datasets.build.Example`),
runs the steps of `datasets.build.build` off the event loop, and stores the result as a new
immutable version: a Parquet file with every row's split and lineage, JSON Lines per split in
OpenAI's chat fine-tuning format, and a manifest (content hash, counts after each step, why rows
were dropped, the settings, the Genloom version). Rebuilding the same content gives the same
version back. Forgetting a user writes new versions without that user's rows and deletes the old
versions' files."""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from genloom import __version__
from genloom.datasets.build import BuildSettings, Example, Row, build, chat_line, chat_messages
from genloom.datasets.files import content_hash, from_parquet, to_jsonl, to_parquet
from genloom.gateway.errors import InvalidRequest
from genloom.store.datasets import DatasetStore, DatasetVersion
from genloom.store.feedback import FeedbackStore
from genloom.store.files import FileStore
from genloom.store.request_log import RequestLog

SourceKind = Literal["feedback", "requests", "file"]
MAX_ERRORS = 10  # invalid file lines named in the manifest


@dataclass(frozen=True)
class Source:
    kind: SourceKind
    tenant: str | None = None  # None: every tenant's (admin builds)
    model: str | None = None
    since: datetime | None = None
    min_score: float = 0.75  # feedback: ratings at or above this are kept (4 of 5 stars, a thumbs-up)
    file_id: str | None = None
    limit: int = 100_000

    def describe(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if v is not None}
        if self.since is not None:
            out["since"] = int(self.since.timestamp())
        return out


@dataclass
class Selection:
    examples: list[Example] = field(default_factory=list)
    read: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    errors: list[dict[str, Any]] = field(default_factory=list)

    def drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1


class DatasetService:
    def __init__(self, *, store: DatasetStore, feedback: FeedbackStore, request_log: RequestLog, files: FileStore) -> None:
        self.store = store
        self._changing = asyncio.Lock()  # one forget at a time in this process (the store guards across replicas)
        self._feedback = feedback
        self._log = request_log
        self._files = files

    async def build(self, name: str, source: Source, settings: BuildSettings, *,
                    metric: dict[str, Any] | None = None) -> tuple[DatasetVersion, bool]:
        """A new version of `name` (or the newest, when it holds the same rows) and whether it is new."""
        selection = await self._select(source)
        built = await asyncio.to_thread(build, selection.examples, settings, selected_from=selection.read,
                                        dropped_at_selection=selection.dropped)
        if not built.rows:
            raise InvalidRequest(
                f"the dataset would be empty: {selection.read} rows read, dropped: {json.dumps(built.dropped)}", "source")
        manifest = {"source": source.describe(), "settings": asdict(settings), "counts": built.counts,
                    "dropped": built.dropped, "pii_placeholders": built.scrubbed, "metric": metric,
                    "errors": selection.errors, "lineage": _lineage_summary(built.rows)}
        return await self._store(name, source.tenant, built.rows, manifest)

    async def rows(self, version: DatasetVersion) -> list[Row]:
        if version.blob is None:
            raise InvalidRequest(f"{version.ref} was superseded ({version.superseded_why}); its rows are deleted", "dataset")
        data = await asyncio.to_thread(self._files.blobs.get, version.blob)
        return await asyncio.to_thread(from_parquet, data)

    async def export(self, version: DatasetVersion, split: Literal["train", "eval"]) -> bytes:
        """The split as JSON Lines in OpenAI's chat fine-tuning format."""
        blob = version.train_blob if split == "train" else version.eval_blob
        if version.blob is None:
            raise InvalidRequest(f"{version.ref} was superseded ({version.superseded_why}); its files are deleted", "dataset")
        return b"" if blob is None else await asyncio.to_thread(self._files.blobs.get, blob)

    async def forget_user(self, *, tenant: str, user: str, request_ids: set[str], why: str) -> dict[str, Any]:
        """Every active dataset version holding rows of the tenant's user (by the row's user, or by
        its lineage: one of `request_ids`, the user's requests, whoever rated them) is superseded
        and its files deleted; the newest version of a name is replaced by one without those rows
        (an older one is not: a derived copy would become the name's newest). A version another
        change superseded meanwhile is read again from the newest, so no replacement keeps rows
        another deletion removed."""
        def theirs(r: Row) -> bool:
            return r.example.tenant == tenant and (r.example.user == user or r.example.lineage.get("request_id") in request_ids)

        replaced, removed = [], 0
        async with self._changing:
            for name in sorted({v.name for v in await self.store.list(active_only=True) if v.tenant in (None, tenant)}):
                for _ in range(5):  # another replica's change may supersede what this one read: read again
                    versions = await self.store.list(name=name, active_only=True)
                    newest = max(v.version for v in versions) if versions else None
                    raced = False
                    for version in versions:
                        rows = await self.rows(version)
                        kept = [r for r in rows if not theirs(r)]
                        if len(kept) == len(rows):
                            continue
                        new: DatasetVersion | None = None
                        if kept and version.version == newest:
                            counts = dict(version.manifest.get("counts", {}))
                            counts.update(train=sum(r.split == "train" for r in kept), eval=sum(r.split == "eval" for r in kept))
                            manifest = version.manifest | {"counts": counts, "derived_from": version.ref,
                                                           "removed_rows": len(rows) - len(kept), "lineage": _lineage_summary(kept)}
                            new, _ = await self._store(version.name, version.tenant, kept, manifest)
                        if not await self.store.supersede(version.name, version.version, by=new.version if new else None,
                                                          why=why, at=datetime.now(UTC)):
                            if new is not None:  # built from a version that is no longer current
                                await self.store.supersede(new.name, new.version, by=None, why="superseded while made",
                                                           at=datetime.now(UTC))
                                await self._delete_blobs(new)
                            raced = True
                            break
                        removed += len(rows) - len(kept)
                        await self._delete_blobs(version)
                        replaced.append({"superseded": version.ref, "by": new.ref if new else None})
                    if not raced:
                        break
        return {"dataset_rows": removed, "datasets": replaced}

    async def _store(self, name: str, tenant: str | None, rows: list[Row], manifest: dict[str, Any]) -> tuple[DatasetVersion, bool]:
        parquet, train, eval_, sha256 = await asyncio.to_thread(
            lambda: (to_parquet(rows), to_jsonl(rows, "train"), to_jsonl(rows, "eval"), content_hash(rows)))
        blobs = self._files.blobs
        blob = await asyncio.to_thread(blobs.put, parquet)
        train_blob = await asyncio.to_thread(blobs.put, train) if train else None
        eval_blob = await asyncio.to_thread(blobs.put, eval_) if eval_ else None
        manifest = manifest | {"sha256": sha256, "rows": len(rows), "genloom_version": __version__,
                               "files": {"parquet": blob, "train_jsonl": train_blob, "eval_jsonl": eval_blob}}
        return await self.store.add(name=name, tenant=tenant, sha256=sha256, rows=len(rows), manifest=manifest,
                                    blob=blob, train_blob=train_blob, eval_blob=eval_blob, at=datetime.now(UTC))

    async def _delete_blobs(self, version: DatasetVersion) -> None:
        for sha in {version.blob, version.train_blob, version.eval_blob} - {None}:
            if not await self.store.names_blob(sha) and not await self._files.names(sha):
                await asyncio.to_thread(self._files.blobs.delete, sha)

    # -- sources ---------------------------------------------------------------------------------

    async def _select(self, source: Source) -> Selection:
        if source.kind == "feedback":
            return await self._from_feedback(source)
        if source.kind == "requests":
            return await self._from_requests(source)
        return await self._from_file(source)

    async def _from_feedback(self, source: Source) -> Selection:
        """Ratings at or above `min_score` teach their answer; a correction is the target whatever
        the rating (a bad answer corrected is the best example there is)."""
        out = Selection()
        ratings = await self._feedback.list(tenant=source.tenant, model=source.model, since=source.since,
                                            limit=source.limit, oldest_first=True)
        for f in ratings:
            out.read += 1
            target = f.correction if f.correction is not None else f.output if f.score >= source.min_score else None
            if target is None:
                out.drop("low_rating")
                continue
            if f.prompt is None:
                out.drop("no_content")  # the tenant keeps no content, and no correction came with it
                continue
            messages = chat_messages(f.prompt, target)
            if messages is None:
                out.drop("not_text")
                continue
            out.examples.append(Example(messages=messages, tenant=f.tenant, user=f.user, lineage={
                "source": "feedback", "feedback_id": f.id, "request_id": f.response_id, "version": f.version,
                "corrected": f.correction is not None}))
        return out

    async def _from_requests(self, source: Source) -> Selection:
        out = Selection()
        for entry in await self._log.find(tenant=source.tenant, model=source.model, since=source.since, limit=source.limit):
            out.read += 1
            messages = chat_messages(entry.prompt, entry.output[0]) if entry.prompt is not None and entry.output else None
            if messages is None:
                out.drop("not_text")
                continue
            out.examples.append(Example(messages=messages, tenant=entry.tenant, user=entry.user, lineage={
                "source": "requests", "request_id": entry.id, "version": entry.version}))
        return out

    async def _from_file(self, source: Source) -> Selection:
        if source.file_id is None:
            raise InvalidRequest("a file source needs file_id (upload it with purpose fine-tune)", "file_id")
        record = await self._files.get(source.file_id, tenant=source.tenant)
        data = await self._files.content(record)
        out = Selection()
        for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), start=1):
            if not line.strip():
                continue
            out.read += 1
            problem, messages = chat_line(line)
            if problem is not None:
                out.drop("invalid_line")
                if len(out.errors) < MAX_ERRORS:
                    out.errors.append({"line": number, "error": problem})
                continue
            out.examples.append(Example(messages=messages, tenant=record.tenant, user=None,
                                        lineage={"source": "file", "file": record.id, "line": number}))
        return out


def parse_ref(ref: str) -> tuple[str, int | None]:
    """'name' (its newest active version) or 'name@v3'."""
    m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._\-]{0,127})(?:@v(\d+))?", ref)
    if m is None:
        raise InvalidRequest(f"'{ref}' is not a dataset reference: NAME or NAME@vN", "dataset")
    return m.group(1), int(m.group(2)) if m.group(2) else None


def _lineage_summary(rows: list[Row]) -> dict[str, Any]:
    sources: dict[str, int] = {}
    for r in rows:
        kind = str(r.example.lineage.get("source"))
        sources[kind] = sources.get(kind, 0) + 1
    return {"rows_by_source": sources,
            "request_ids": sum(1 for r in rows if r.example.lineage.get("request_id")),
            "versions": sorted({v for r in rows if (v := r.example.lineage.get("version"))})}

