"""Finding and aborting unfinished uploads at a provider (``cloudput cleanup``).

Uses only the provider contract and the journal; never touches a completed object.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime

from cloudput.engine.runner import spec_of
from cloudput.journal import UNFINISHED, Journal, UploadRecord
from cloudput.keys import Target
from cloudput.providers.base import Incomplete, ObjectSpec, Provider

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Orphan:
    """An unfinished upload at the provider, and the journal record it belongs to."""

    incomplete: Incomplete
    record: UploadRecord | None


def find_orphans(
    provider: Provider, journal: Journal, target: Target, older_than_s: float
) -> list[Orphan]:
    """What the provider lists as unfinished under ``target``, plus the uploads only
    the journal knows (GCS sessions; uploads with nothing staged), older than the
    cutoff."""
    records = [r for r in journal.find() if _is_under(r, target)]
    by_session = {r.session: r for r in records if r.session}
    found = [
        Orphan(item, by_session.get(item.session))
        for item in provider.list_incomplete(target, older_than_s)
    ]
    listed = {orphan.incomplete.session for orphan in found}
    cutoff = time.time() - older_than_s
    for record in records:
        if (
            record.session
            and record.session not in listed
            and record.status in (*UNFINISHED, "failed")
            and record.strategy != "single"
            and _epoch(record.initiated_at) <= cutoff
            and _only_journal_knows(provider, journal, record)
        ):
            incomplete = Incomplete(
                Target(record.provider, record.bucket, record.key, record.account),
                record.session,
                _epoch(record.initiated_at),
            )
            found.append(Orphan(incomplete, record))
    return [
        o
        for o in found
        if o.record is None or not journal.is_held_elsewhere(o.record.id)
    ]


def abort_orphan(provider: Provider, journal: Journal, orphan: Orphan) -> None:
    """Abort one orphan at the provider and mark its record aborted."""
    if orphan.record is not None:
        provider.abort(spec_of(orphan.record), orphan.incomplete.session)
        journal.update(orphan.record.id, status="aborted")
        journal.forget_parts(orphan.record.id)
        return
    spec = ObjectSpec(orphan.incomplete.target, 0, "application/octet-stream")
    provider.abort(spec, orphan.incomplete.session)


def _only_journal_knows(
    provider: Provider, journal: Journal, record: UploadRecord
) -> bool:
    """GCS sessions, and multipart uploads with nothing staged yet (an Azure blob with
    no block is invisible to the provider's listing), are known to the journal only."""
    return provider.limits.strategy != "multipart" or not journal.parts(record.id)


def _is_under(record: UploadRecord, target: Target) -> bool:
    return (
        record.provider == target.provider
        and record.bucket == target.bucket
        and record.key.startswith(target.key)
    )


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
