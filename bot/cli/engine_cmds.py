"""Sub-commands of the relationship engine: import, contacts, orgs, whoknows, merge, unmerge."""

from __future__ import annotations

import argparse
import csv
import io
import sys
import time
from collections import Counter
from pathlib import Path
from typing import NamedTuple

from sqlalchemy.engine import Engine
from sqlmodel import Session

from bot.cli.main import add_db_option, iso_datetime, positive_int, print_json, reader_count
from bot.config import get_settings
from bot.errors import InputError, NotFoundError
from bot.relationships import compute, identity, queries
from bot.relationships.strength import band
from bot.relationships.views import ContactView, OrgView
from bot.storage.db import make_engine
from bot.storage.models import LOCAL_TEAM
from bot.storage.schema import create_schema
from bot.timeutil import isoformat_z


def open_engine(args: argparse.Namespace, *, create: bool = False) -> Engine:
    """Open the database of a command; only ``create`` commands may make a new SQLite file."""
    url = getattr(args, "db", None) or get_settings().database_url
    if not create and url.startswith("sqlite"):
        from sqlalchemy.engine import make_url

        path = make_url(url).database
        if path and path != ":memory:" and not Path(path).exists():
            raise NotFoundError(
                f"no database at {path}; import mail first with `crm-bot import PATH --owner ADDRESS`"
            )
    engine = make_engine(url)
    create_schema(engine)
    return engine


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "import",
        help="import a mail export (Maildir, mbox, .eml or a folder tree), or a folder of several mailboxes",
    )
    p.add_argument(
        "path",
        type=Path,
        help="a Maildir, an mbox file, an .eml file or a folder of messages; with --owners, a folder of mailboxes",
    )
    owners = p.add_mutually_exclusive_group(required=True)
    owners.add_argument("--owner", help="the mailbox owner's e-mail address")
    owners.add_argument(
        "--owners",
        type=Path,
        metavar="FILE",
        help="import several mailboxes in one run: a CSV file of 'folder,owner address[,owner name]' "
        "lines, one per mailbox, each folder relative to PATH",
    )
    p.add_argument("--name", help="the owner's full name, used to recognise their other addresses")
    p.add_argument("--timezone", help="IANA time zone for dates without an offset (default UTC)")
    p.add_argument("--now", type=iso_datetime, help="reference time for strength, ISO 8601 (default: when the imported mail ends)")
    p.add_argument("--no-progress", action="store_true", help="do not draw a progress bar")
    p.add_argument(
        "--readers",
        type=reader_count,
        help="processes that read and parse files while this one writes; 0 reads in one process "
        "(default: one per core beyond the first, at most 2, for imports of 500 messages or more)",
    )
    add_db_option(p)
    p.set_defaults(handler=cmd_import)

    p = subparsers.add_parser("contacts", help="list an owner's relationships by strength")
    p.add_argument("--owner", required=True)
    p.add_argument("--limit", type=positive_int, default=20, help="how many to list (default 20)")
    p.add_argument("--now", type=iso_datetime, help="reference time for strength and recency, ISO 8601; computed for that date without storing")
    p.add_argument("--external", action="store_true", help="leave out colleagues of the owner's organisation")
    p.add_argument("--json", action="store_true", help="print JSON")
    add_db_option(p)
    p.set_defaults(handler=cmd_contacts)

    p = subparsers.add_parser("orgs", help="list the organisations where an owner knows people")
    p.add_argument("--owner", required=True)
    p.add_argument("--limit", type=positive_int, default=50)
    p.add_argument("--json", action="store_true")
    add_db_option(p)
    p.set_defaults(handler=cmd_orgs)

    p = subparsers.add_parser("whoknows", help="who knows someone at an organisation, across all mailboxes")
    p.add_argument("query", help="a company name or domain")
    p.add_argument("--limit", type=positive_int, default=10)
    p.add_argument("--now", type=iso_datetime)
    p.add_argument("--json", action="store_true")
    add_db_option(p)
    p.set_defaults(handler=cmd_whoknows)

    p = subparsers.add_parser("status", help="show each mailbox's counts and sync health")
    p.add_argument("--owner", help="only this owner's mailbox")
    p.add_argument("--json", action="store_true")
    add_db_option(p)
    p.set_defaults(handler=cmd_status)

    p = subparsers.add_parser("merge", help="merge the person of one address into the person of another")
    p.add_argument("keep", help="an address of the person to keep")
    p.add_argument("other", help="an address of the person to merge into it")
    p.add_argument("--owner", help="recompute this owner's relationships afterwards")
    add_db_option(p)
    p.set_defaults(handler=cmd_merge)

    p = subparsers.add_parser("unmerge", help="undo a merge by its id (see `crm-bot merges`)")
    p.add_argument("merge_id", type=positive_int)
    p.add_argument("--owner", help="recompute this owner's relationships afterwards")
    add_db_option(p)
    p.set_defaults(handler=cmd_unmerge)

    p = subparsers.add_parser("merges", help="list merges of people with their reasons")
    p.add_argument("--json", action="store_true")
    add_db_option(p)
    p.set_defaults(handler=cmd_merges)


class Progress:
    """A one-line progress counter on a terminal; silent otherwise."""

    def __init__(self, enabled: bool):
        self.enabled = enabled and sys.stderr.isatty()
        self.count = 0
        self.started = time.monotonic()
        self.last_draw = 0.0

    def __call__(self, n: int) -> None:
        self.count += n
        now = time.monotonic()
        if self.enabled and now - self.last_draw > 0.2:
            rate = self.count / max(now - self.started, 1e-6)
            sys.stderr.write(f"\rimporting: {self.count:,} messages ({rate:,.0f}/s)")
            sys.stderr.flush()
            self.last_draw = now

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\r" + " " * 60 + "\r")


def cmd_import(args: argparse.Namespace) -> int:
    from bot.mail.files import FilesSource
    from bot.mail.ingest import ImportJob, ensure_mailbox, import_sources

    if not args.path.exists():
        raise InputError(f"{args.path} does not exist; give a Maildir, an mbox file, an .eml file or a folder")
    if args.owners is not None:
        if args.name:
            raise InputError("--name names the owner of one mailbox; with --owners, put each owner's name in the file")
        entries = read_owners_file(args.owners, args.path)
    else:
        entries = [MailboxEntry(args.path, args.owner, args.name)]
    settings = get_settings()
    engine = open_engine(args, create=True)
    jobs = []
    for entry in entries:
        mailbox = ensure_mailbox(
            engine, entry.owner, source_kind="files", owner_name=entry.name, timezone=args.timezone,
            source_config={"path": str(entry.path.resolve())},
        )
        jobs.append(ImportJob(mailbox, FilesSource(entry.path, mailbox_tz=mailbox.timezone)))
    progress = Progress(not args.no_progress)
    started = time.monotonic()
    try:
        summaries = import_sources(engine, jobs, settings=settings, progress=progress, readers=args.readers)
    finally:
        progress.close()
    for job in jobs:
        compute.recompute(engine, job.mailbox.id, args.now, settings=settings)
    elapsed = time.monotonic() - started
    with Session(engine) as session:
        statuses = [queries.mailbox_status(session, job.mailbox.id) for job in jobs]
    read = sum(summary.read for summary in summaries)
    noun = "message" if read == 1 else "messages"
    if args.owners is None:
        summary, status = summaries[0], statuses[0]
        print(f"read {read:,} {noun} from {args.path} in {elapsed:.1f}s")
        print(f"  stored      {summary.stored:,}")
        print(f"  duplicates  {summary.duplicates:,}")
        print(f"  skipped     {summary.skipped_total:,}" + _skipped_detail(summary.skipped))
        print(f"  people      {status.people:,} ({status.two_way_relationships:,} two-way)")
        print(f"  organisations {status.organisations:,}")
        return 0
    print(f"read {read:,} {noun} of {len(jobs)} mailboxes from {args.path} in {elapsed:.1f}s")
    rows = [("folder", "owner", "read", "stored", "duplicates", "skipped", "people", "organisations")]
    for entry, summary, status in zip(entries, summaries, statuses):
        rows.append(
            (
                entry.path.name,
                entry.owner,
                f"{summary.read:,}",
                f"{summary.stored:,}",
                f"{summary.duplicates:,}",
                f"{summary.skipped_total:,}",
                f"{status.people:,}",
                f"{status.organisations:,}",
            )
        )
    rows.append(
        (
            "all",
            "",
            f"{read:,}",
            f"{sum(s.stored for s in summaries):,}",
            f"{sum(s.duplicates for s in summaries):,}",
            f"{sum(s.skipped_total for s in summaries):,}",
            "",
            "",
        )
    )
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        cells = [cell.ljust(width) if column < 2 else cell.rjust(width) for column, (cell, width) in enumerate(zip(row, widths))]
        print("  " + "  ".join(cells).rstrip())
    skipped = sum((summary.skipped for summary in summaries), Counter())
    if skipped:
        print("  skipped: " + ", ".join(f"{reason} {count:,}" for reason, count in sorted(skipped.items())))
    return 0


class MailboxEntry(NamedTuple):
    """A mailbox to import: its folder, its owner's address and optional name."""

    path: Path
    owner: str
    name: str | None


def read_owners_file(path: Path, root: Path) -> list[MailboxEntry]:
    """Read the 'folder,owner address[,owner name]' lines of an --owners file.

    Blank lines and lines starting with '#' are ignored. Raises InputError naming the
    line of a malformed entry, a missing folder or a folder or owner given twice.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the owners file {path}: {exc}; give a UTF-8 CSV file") from None
    if not root.is_dir():
        raise InputError(f"{root} is not a folder; with --owners, PATH is the folder that holds the mailboxes")
    entries: list[MailboxEntry] = []
    folders: dict[str, int] = {}
    addresses: dict[str, int] = {}
    for number, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        cells = [cell.strip() for cell in row]
        if not any(cells) or cells[0].startswith("#"):
            continue
        if len(cells) not in (2, 3) or not cells[0] or not cells[1]:
            raise InputError(
                f"{path} line {number}: {','.join(row)!r} is not 'folder,owner address[,owner name]'; fix or remove the line"
            )
        folder, owner = cells[0], cells[1]
        name = cells[2] if len(cells) == 3 and cells[2] else None
        mailbox_path = root / folder
        if not mailbox_path.exists():
            raise InputError(f"{path} line {number}: folder {folder!r} does not exist under {root}; fix the folder name")
        checks = ((folders, str(mailbox_path.resolve()), "folder", folder), (addresses, owner.casefold(), "owner", owner))
        for seen, key, field_name, value in checks:
            if key in seen:
                raise InputError(
                    f"{path} line {number}: {field_name} {value!r} is already on line {seen[key]}; give each mailbox once"
                )
            seen[key] = number
        entries.append(MailboxEntry(mailbox_path, owner, name))
    if not entries:
        raise InputError(f"the owners file {path} lists no mailbox; add 'folder,owner address' lines")
    return entries


def _skipped_detail(skipped) -> str:  # type: ignore[no-untyped-def]
    if not skipped:
        return ""
    return " (" + ", ".join(f"{reason}: {count}" for reason, count in sorted(skipped.items())) + ")"


def contact_json(view: ContactView) -> dict:
    return {
        "name": view.name,
        "addresses": view.addresses,
        "organisation": view.organisation,
        "internal": view.is_internal,
        "strength": view.strength,
        "inbound": view.inbound,
        "outbound": view.outbound,
        "two_way_threads": view.two_way_threads,
        "first_contact": isoformat_z(view.first_contact),
        "last_inbound": isoformat_z(view.last_inbound),
        "last_outbound": isoformat_z(view.last_outbound),
        "last_two_way": isoformat_z(view.last_two_way),
        "days_since_two_way": None if view.days_since_two_way is None else round(view.days_since_two_way, 1),
        "cadence_days": view.cadence_days,
        "reason": view.reason,
    }


def cmd_contacts(args: argparse.Namespace) -> int:
    engine = open_engine(args)
    with Session(engine) as session:
        mailbox = queries.get_mailbox(session, args.owner)
    with Session(engine) as session:
        if args.now is None:
            views = queries.top_contacts(
                session, mailbox.id, limit=args.limit, now=None, include_internal=not args.external
            )
        else:
            # Computed for that date only; the stored relationships are left as they are.
            rows = compute.relationships_as_of(engine, mailbox.id, args.now)
            if args.external:
                rows = [r for r in rows if not r.is_internal]
            rows.sort(key=lambda r: (-r.strength, -(r.inbound_count + r.outbound_count), r.person_id))
            views = queries.contact_views(session, rows[: args.limit], args.now)
    if args.json:
        print_json([contact_json(v) for v in views])
        return 0
    if not views:
        print(f"no relationships yet for {args.owner}")
        return 0
    for rank, view in enumerate(views, 1):
        org = view.organisation or "-"
        flag = " (internal)" if view.is_internal else ""
        print(f"{rank:>3}. {view.strength:5.1f}  {view.name or '?'} <{view.addresses[0] if view.addresses else '?'}>  {org}{flag}")
        print(f"            {view.reason}")
    return 0


def org_json(view: OrgView) -> dict:
    return {
        "organisation": view.name,
        "domains": view.domains,
        "internal": view.is_internal,
        "people": view.people,
        "best_strength": view.best_strength,
        "last_contact": isoformat_z(view.last_contact),
    }


def cmd_orgs(args: argparse.Namespace) -> int:
    engine = open_engine(args)
    with Session(engine) as session:
        mailbox = queries.get_mailbox(session, args.owner)
        views = queries.organisations(session, mailbox.id, limit=args.limit)
    if args.json:
        print_json([org_json(v) for v in views])
        return 0
    for view in views:
        flag = " (internal)" if view.is_internal else ""
        people = "person" if view.people == 1 else "people"
        print(f"{view.best_strength:5.1f}  {view.name}{flag}  {', '.join(view.domains)}  {view.people} {people}")
    return 0


WHOKNOWS_MIN_QUERY = 2


def cmd_whoknows(args: argparse.Namespace) -> int:
    if len(args.query.strip()) < WHOKNOWS_MIN_QUERY:
        raise InputError(
            f"who-knows query {args.query!r} is too short; give at least {WHOKNOWS_MIN_QUERY} characters "
            "of a company name or domain, e.g. `crm-bot whoknows orion`"
        )
    engine = open_engine(args)
    with Session(engine) as session:
        results = queries.who_knows(session, args.query, limit=args.limit, now=args.now)
    payload = [
        {
            "organisation": r.organisation,
            "domains": r.domains,
            "score": r.score,
            "owners": [
                {
                    "owner": hit.owner,
                    "strength": hit.strength,
                    "band": band(hit.strength),
                    "last_contact": isoformat_z(hit.last_contact),
                    "contacts": hit.contacts,
                }
                for hit in r.owners
            ],
        }
        for r in results
    ]
    if args.json:
        print_json(payload)
        return 0
    if not results:
        print(f"nobody knows anyone at an organisation matching {args.query!r}")
        print("(only external organisations are searched: the owners' own organisation never is)")
        return 0
    for r in payload:
        print(f"{r['organisation']} ({', '.join(r['domains'])}), match {r['score']:.0f}")
        for hit in r["owners"]:
            print(
                f"    {hit['owner']}: {hit['band']} ({hit['strength']:.1f}), "
                f"{hit['contacts']} {'person' if hit['contacts'] == 1 else 'people'}, "
                f"last contact {hit['last_contact'] or 'never'}"
            )
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    engine = open_engine(args)
    merge_id = identity.merge_addresses(engine, LOCAL_TEAM, args.keep, args.other, actor="cli")
    print(f"merged {args.other} into the person of {args.keep} (merge {merge_id}; undo with `crm-bot unmerge {merge_id}`)")
    _recompute_owner(engine, args.owner)
    return 0


def cmd_unmerge(args: argparse.Namespace) -> int:
    engine = open_engine(args)
    record = identity.unmerge(engine, LOCAL_TEAM, args.merge_id)
    print(f"undid merge {record.id}: {', '.join(record.moved_addresses)} belong to person {record.merged_person_id} again")
    _recompute_owner(engine, args.owner)
    return 0


def _recompute_owner(engine: Engine, owner: str | None) -> None:
    with Session(engine) as session:
        if owner:
            mailboxes = [queries.get_mailbox(session, owner)]
        else:
            from bot.storage.models import Mailbox
            from sqlalchemy import select

            mailboxes = list(session.execute(select(Mailbox)).scalars())
    for mailbox in mailboxes:
        compute.recompute(engine, mailbox.id)


def cmd_merges(args: argparse.Namespace) -> int:
    engine = open_engine(args)
    records = identity.list_merges(engine, LOCAL_TEAM)
    from bot.storage.models import Address, Person
    from sqlalchemy import select

    with Session(engine) as session:
        kept_ids = {r.kept_person_id for r in records}
        names = dict(
            session.execute(select(Person.id, Person.display_name).where(Person.id.in_(kept_ids))).all()
        ) if kept_ids else {}
        first_address = {}
        if kept_ids:
            for person_id, address in session.execute(
                select(Address.person_id, Address.address).where(Address.person_id.in_(kept_ids)).order_by(Address.id)
            ):
                first_address.setdefault(person_id, address)
    rows = [
        {
            "id": r.id,
            "kept_person": r.kept_person_id,
            "kept_name": names.get(r.kept_person_id),
            "kept_address": first_address.get(r.kept_person_id),
            "merged_person": r.merged_person_id,
            "merged_name": r.merged_name,
            "addresses": r.moved_addresses,
            "reason": r.reason,
            "created_at": isoformat_z(r.created_at),
            "undone_at": isoformat_z(r.undone_at),
        }
        for r in records
    ]
    if args.json:
        print_json(rows)
        return 0
    for row in rows:
        undone = f", undone {row['undone_at']}" if row["undone_at"] else ""
        kept = row["kept_name"] or row["kept_address"] or f"person {row['kept_person']}"
        print(f"{row['id']:>5}  {row['reason']:<18} {', '.join(row['addresses'])} -> {kept}{undone}")
    return 0


def status_json(status) -> dict:  # type: ignore[no-untyped-def]
    return {
        "owner": status.owner,
        "source": status.source_kind,
        "messages": status.messages,
        "people": status.people,
        "two_way_relationships": status.two_way_relationships,
        "organisations": status.organisations,
        "first_message": isoformat_z(status.first_message),
        "last_message": isoformat_z(status.last_message),
        "last_import": isoformat_z(status.last_import_at),
        "last_sync_ok": isoformat_z(status.last_sync_ok_at),
        "last_sync_error": status.last_sync_error,
        "last_sync_error_at": isoformat_z(status.last_sync_error_at),
        "folders": [
            {**folder, "updated_at": isoformat_z(folder["updated_at"])} for folder in status.folders
        ],
    }


def cmd_status(args: argparse.Namespace) -> int:
    from bot.storage.models import Mailbox
    from sqlalchemy import select

    engine = open_engine(args)
    with Session(engine) as session:
        if args.owner:
            mailboxes = [queries.get_mailbox(session, args.owner)]
        else:
            mailboxes = list(session.execute(select(Mailbox).order_by(Mailbox.id)).scalars())
        statuses = [queries.mailbox_status(session, m.id) for m in mailboxes]
    if args.json:
        print_json([status_json(s) for s in statuses])
        return 0
    if not statuses:
        print("no mailboxes yet; import one with `crm-bot import PATH --owner ADDRESS`")
        return 0
    for status in statuses:
        data = status_json(status)
        print(f"{status.owner} ({status.source_kind})")
        print(f"  messages      {status.messages:,} from {data['first_message'] or '-'} to {data['last_message'] or '-'}")
        print(f"  people        {status.people:,} ({status.two_way_relationships:,} two-way) at {status.organisations:,} organisations")
        print(f"  last import   {data['last_import'] or 'never'}")
        print(f"  last sync     {data['last_sync_ok'] or 'never'}")
        if status.last_sync_error:
            print(f"  last error    {data['last_sync_error_at']}: {status.last_sync_error}")
        for folder in data["folders"]:
            print(f"  folder        {folder['folder']} ({folder['role']}): {folder['items_stored']:,} stored, updated {folder['updated_at'] or '-'}")
    return 0
