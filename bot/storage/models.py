"""Table models for every flow of the product.

All tables live in this one module so that models referring to each other
never import in a cycle. Every row that belongs to a Slack workspace carries
``team_id``; a deployment that has not linked Slack yet uses the team id
``local``. Datetime columns take aware datetimes and return them in UTC
(SQLModel's ``UTCDateTime``); a naive datetime is rejected when it is written.
"""

from __future__ import annotations

from datetime import datetime
from typing import Optional

from sqlalchemy import Column, Index, JSON, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

LOCAL_TEAM = "local"


class Workspace(SQLModel, table=True):
    """A Slack workspace, or the local team of a deployment without Slack."""

    team_id: str = Field(primary_key=True)
    name: Optional[str] = None
    max_sharing_level: str = "names"  # the administrator's cap, see SharingLevel
    retention_days: Optional[int] = None
    allow_subjects: bool = False
    created_at: datetime


class Mailbox(SQLModel, table=True):
    """One owner's mailbox and where it is read from."""

    __table_args__ = (UniqueConstraint("team_id", "owner_address"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    team_id: str = Field(default=LOCAL_TEAM, index=True)
    owner_address: str  # the primary address given by the administrator, lower case
    owner_name: Optional[str] = None
    source_kind: str = "files"  # files | ews | graph
    source_config: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    credentials_ref: Optional[str] = None  # env:NAME or file:/path, never the secret
    timezone: str = "UTC"
    store_subjects: bool = False
    paused: bool = False
    created_at: datetime
    last_import_at: Optional[datetime] = None
    last_sync_ok_at: Optional[datetime] = None
    last_sync_error: Optional[str] = None
    last_sync_error_at: Optional[datetime] = None
    next_sync_not_before: Optional[datetime] = None
    messages_read: int = 0
    messages_skipped: int = 0


class OwnerAddress(SQLModel, table=True):
    """An address that belongs to a mailbox owner, given or learned."""

    __table_args__ = (UniqueConstraint("mailbox_id", "address"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    team_id: str = Field(default=LOCAL_TEAM, index=True)
    mailbox_id: int = Field(foreign_key="mailbox.id", index=True)
    address: str
    origin: str = "given"  # given | learned | linked
    evidence: Optional[str] = None


class FolderState(SQLModel, table=True):
    """Sync cursor of one folder: EWS sync state, Graph deltaLink or a file offset."""

    __table_args__ = (UniqueConstraint("mailbox_id", "folder_key"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    team_id: str = Field(default=LOCAL_TEAM, index=True)
    mailbox_id: int = Field(foreign_key="mailbox.id", index=True)
    folder_key: str
    folder_role: str = "other"  # inbox | sent | other | calendar | contacts
    cursor: Optional[str] = Field(default=None, sa_column=Column(Text))
    items_stored: int = 0
    updated_at: Optional[datetime] = None


class SyncRun(SQLModel, table=True):
    """One import or sync of a mailbox, for health reports and resumption."""

    id: Optional[int] = Field(default=None, primary_key=True)
    team_id: str = Field(default=LOCAL_TEAM, index=True)
    mailbox_id: int = Field(foreign_key="mailbox.id", index=True)
    kind: str = "import"  # import | sync
    started_at: datetime
    finished_at: Optional[datetime] = None
    outcome: str = "running"  # running | ok | failed | deferred
    error: Optional[str] = None
    counts: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class Organisation(SQLModel, table=True):
    """A company, or the owners' own organisation when ``is_internal`` is set."""

    id: Optional[int] = Field(default=None, primary_key=True)
    team_id: str = Field(default=LOCAL_TEAM, index=True)
    name: str
    normalized_name: str = Field(index=True)
    is_internal: bool = False
    source: str = "domain"  # domain | contacts | manual


class OrganisationDomain(SQLModel, table=True):
    """A registrable domain that belongs to an organisation."""

    __table_args__ = (UniqueConstraint("team_id", "domain"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    team_id: str = Field(default=LOCAL_TEAM, index=True)
    organisation_id: int = Field(foreign_key="organisation.id", index=True)
    domain: str


class OrganisationAlias(SQLModel, table=True):
    """Another name of an organisation, searched by who-knows."""

    id: Optional[int] = Field(default=None, primary_key=True)
    team_id: str = Field(default=LOCAL_TEAM, index=True)
    organisation_id: int = Field(foreign_key="organisation.id", index=True)
    alias: str
    normalized_alias: str = Field(index=True)


class Person(SQLModel, table=True):
    """A human (or a list) behind one or more addresses."""

    id: Optional[int] = Field(default=None, primary_key=True)
    team_id: str = Field(default=LOCAL_TEAM, index=True)
    display_name: Optional[str] = None
    normalized_name: Optional[str] = Field(default=None, index=True)
    kind: str = "person"  # person | list | role
    organisation_id: Optional[int] = Field(default=None, foreign_key="organisation.id", index=True)
    job_title: Optional[str] = None
    merged_into_id: Optional[int] = Field(default=None, foreign_key="person.id")
    created_at: datetime


class Address(SQLModel, table=True):
    """One normalised e-mail address and the person it belongs to."""

    __table_args__ = (UniqueConstraint("team_id", "address"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    team_id: str = Field(default=LOCAL_TEAM, index=True)
    address: str  # normalised: lower case, plus-tag folded when FOLD_PLUS_ADDRESSES is set
    domain: str = Field(index=True)
    display_name: Optional[str] = None
    person_id: int = Field(foreign_key="person.id", index=True)
    organisation_id: Optional[int] = Field(default=None, foreign_key="organisation.id")
    is_freemail: bool = False
    kind: str = "person"  # person | list | role | noreply
    last_seen: Optional[datetime] = None  # newest mail with this address, bulk included


class PersonMerge(SQLModel, table=True):
    """A merge of two people, with its reason, kept so it can be explained and undone."""

    id: Optional[int] = Field(default=None, primary_key=True)
    team_id: str = Field(default=LOCAL_TEAM, index=True)
    kept_person_id: int = Field(foreign_key="person.id", index=True)
    merged_person_id: int = Field(foreign_key="person.id")  # left without addresses, kept for undo
    merged_name: Optional[str] = None
    moved_addresses: list = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    reason: str  # same-name-same-org | explicit | alias-learned
    created_at: datetime
    created_by: Optional[str] = None
    undone_at: Optional[datetime] = None


class Employment(SQLModel, table=True):
    """A person seen at an organisation between two times; a new row marks a role change."""

    id: Optional[int] = Field(default=None, primary_key=True)
    team_id: str = Field(default=LOCAL_TEAM, index=True)
    person_id: int = Field(foreign_key="person.id", index=True)
    organisation_id: int = Field(foreign_key="organisation.id", index=True)
    first_seen: datetime
    last_seen: datetime
    job_title: Optional[str] = None
    source: str = "mail"  # mail | contacts


class RoleChange(SQLModel, table=True):
    """A known person who started writing from a new employer's domain."""

    id: Optional[int] = Field(default=None, primary_key=True)
    team_id: str = Field(default=LOCAL_TEAM, index=True)
    person_id: int = Field(foreign_key="person.id", index=True)
    from_organisation_id: int = Field(foreign_key="organisation.id")
    to_organisation_id: int = Field(foreign_key="organisation.id")
    seen_at: datetime
    message_id: Optional[int] = Field(default=None, foreign_key="message.id")


class Message(SQLModel, table=True):
    """Metadata of one message in one mailbox; bodies are never stored."""

    __table_args__ = (
        UniqueConstraint("mailbox_id", "fingerprint"),
        Index("ix_message_mailbox_sent", "mailbox_id", "sent_at"),
        Index("ix_message_mailbox_thread", "mailbox_id", "thread_key"),
    )

    id: Optional[int] = Field(default=None, primary_key=True)
    team_id: str = Field(default=LOCAL_TEAM, index=True)
    mailbox_id: int = Field(foreign_key="mailbox.id")
    internet_message_id: Optional[str] = Field(default=None, index=True)
    in_reply_to: Optional[str] = None  # the parent's Message-ID from In-Reply-To or References
    subject_key: Optional[str] = None  # digest of the subject without reply prefixes; never the text
    conversation_hint: Optional[str] = None  # a server's conversation id (EWS, Graph) when given
    fingerprint: str  # stable hash used to count copies in several folders once
    source_ref: Optional[str] = None  # file path, EWS item id or Graph id of the first copy
    folder_role: str  # inbox | sent | other
    direction: str  # out | in | other (the owner neither sent nor received it directly)
    sent_at: datetime
    date_defect: Optional[str] = None
    from_address_id: Optional[int] = Field(default=None, foreign_key="address.id")
    thread_key: str
    subject: Optional[str] = None  # only when the workspace or mailbox allows subjects
    recipient_count: int = 0
    is_bulk: bool = False
    is_auto_reply: bool = False
    is_reply: bool = False  # a reply from a recipient of the thread's earlier message
    copies: int = 1


class MessageParticipant(SQLModel, table=True):
    """An address on a message and its role there."""

    __table_args__ = (Index("ix_participant_address", "address_id"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    team_id: str = LOCAL_TEAM
    message_id: int = Field(foreign_key="message.id", index=True)
    address_id: int = Field(foreign_key="address.id")
    role: str  # from | to | cc | bcc | author (the real author behind a list rewrite)


class Relationship(SQLModel, table=True):
    """The relationship between one owner's mailbox and one person, as computed from mail."""

    __table_args__ = (
        UniqueConstraint("mailbox_id", "person_id"),
        Index("ix_relationship_strength", "mailbox_id", "strength"),
    )

    id: Optional[int] = Field(default=None, primary_key=True)
    team_id: str = Field(default=LOCAL_TEAM, index=True)
    mailbox_id: int = Field(foreign_key="mailbox.id")
    person_id: int = Field(foreign_key="person.id", index=True)
    organisation_id: Optional[int] = Field(default=None, foreign_key="organisation.id", index=True)
    is_internal: bool = False
    first_contact: Optional[datetime] = None
    last_inbound: Optional[datetime] = None
    last_outbound: Optional[datetime] = None
    last_two_way: Optional[datetime] = None
    inbound_count: int = 0
    outbound_count: int = 0
    two_way_threads: int = 0
    meetings_count: int = 0
    strength: float = 0.0
    cadence_days: Optional[float] = None
    computed_at: Optional[datetime] = None
    reference_time: Optional[datetime] = None


class CalendarEvent(SQLModel, table=True):
    """A meeting in an owner's calendar, used for strength and meeting prep."""

    __table_args__ = (UniqueConstraint("mailbox_id", "source_id"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    team_id: str = Field(default=LOCAL_TEAM, index=True)
    mailbox_id: int = Field(foreign_key="mailbox.id", index=True)
    source_id: str
    starts_at: datetime
    ends_at: Optional[datetime] = None
    subject: Optional[str] = None
    organizer_address_id: Optional[int] = Field(default=None, foreign_key="address.id")
    is_cancelled: bool = False


class CalendarAttendee(SQLModel, table=True):
    """An attendee of a calendar event."""

    id: Optional[int] = Field(default=None, primary_key=True)
    team_id: str = LOCAL_TEAM
    event_id: int = Field(foreign_key="calendarevent.id", index=True)
    address_id: int = Field(foreign_key="address.id", index=True)
    response: Optional[str] = None


class ContactCard(SQLModel, table=True):
    """An entry of an owner's own address book (EWS Contacts folder or Graph contacts)."""

    __table_args__ = (UniqueConstraint("mailbox_id", "source_id"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    team_id: str = Field(default=LOCAL_TEAM, index=True)
    mailbox_id: int = Field(foreign_key="mailbox.id", index=True)
    source_id: str
    person_id: Optional[int] = Field(default=None, foreign_key="person.id")
    display_name: Optional[str] = None
    company_name: Optional[str] = None
    job_title: Optional[str] = None
    addresses: list = Field(default_factory=list, sa_column=Column(JSON, nullable=False))


class SlackUser(SQLModel, table=True):
    """A Slack user, the mailbox they own, and their preferences."""

    __table_args__ = (UniqueConstraint("team_id", "slack_user_id"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    team_id: str = Field(index=True)
    slack_user_id: str
    email: Optional[str] = None
    mailbox_id: Optional[int] = Field(default=None, foreign_key="mailbox.id")
    linked_by: str = "profile"  # profile | admin
    is_admin: bool = False
    timezone: str = "UTC"
    digest_time: str = "08:30"
    digest_weekdays_only: bool = True
    sharing_level: str = "existence"  # nobody | existence | names | full
    opted_in: bool = False
    dm_channel_id: Optional[str] = None
    welcomed_at: Optional[datetime] = None


class Nudge(SQLModel, table=True):
    """An item the assistant may send in a digest; ``dedupe_key`` keeps it from being sent twice."""

    __table_args__ = (UniqueConstraint("mailbox_id", "dedupe_key"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    team_id: str = Field(default=LOCAL_TEAM, index=True)
    mailbox_id: int = Field(foreign_key="mailbox.id", index=True)
    kind: str  # reply_owed | follow_up | going_cold | moved | meeting | greetings | opportunity
    dedupe_key: str
    person_id: Optional[int] = Field(default=None, foreign_key="person.id")
    thread_key: Optional[str] = None
    opportunity_id: Optional[int] = Field(default=None, foreign_key="opportunity.id")
    detail: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    state: str = "open"  # open | done | snoozed | muted | expired
    snoozed_until: Optional[datetime] = None
    created_at: datetime
    delivered_at: Optional[datetime] = None


class Mute(SQLModel, table=True):
    """A person an owner never wants nudges about; survives every resync."""

    __table_args__ = (UniqueConstraint("mailbox_id", "person_id"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    team_id: str = Field(default=LOCAL_TEAM, index=True)
    mailbox_id: int = Field(foreign_key="mailbox.id")
    person_id: int = Field(foreign_key="person.id")
    created_at: datetime


class Delivery(SQLModel, table=True):
    """One digest run for one owner: what was sent, or why nothing was."""

    __table_args__ = (UniqueConstraint("mailbox_id", "digest_date"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    team_id: str = Field(default=LOCAL_TEAM, index=True)
    mailbox_id: int = Field(foreign_key="mailbox.id")
    digest_date: str  # the owner's local date, YYYY-MM-DD
    outcome: str  # sent | empty | failed | paused
    nudge_ids: list = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    slack_ts: Optional[str] = None
    error: Optional[str] = None
    created_at: datetime


class Opportunity(SQLModel, table=True):
    """A deal-like opportunity with an organisation."""

    id: Optional[int] = Field(default=None, primary_key=True)
    team_id: str = Field(default=LOCAL_TEAM, index=True)
    mailbox_id: int = Field(foreign_key="mailbox.id", index=True)
    organisation_id: int = Field(foreign_key="organisation.id", index=True)
    title: str
    stage: str = "lead"
    next_step: Optional[str] = None
    due_date: Optional[datetime] = None
    notes: Optional[str] = Field(default=None, sa_column=Column(Text))
    last_activity_at: Optional[datetime] = None
    created_at: datetime
    closed_at: Optional[datetime] = None


class OpportunityPerson(SQLModel, table=True):
    """A person involved in an opportunity."""

    __table_args__ = (UniqueConstraint("opportunity_id", "person_id"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    team_id: str = LOCAL_TEAM
    opportunity_id: int = Field(foreign_key="opportunity.id", index=True)
    person_id: int = Field(foreign_key="person.id")


class IntroRequest(SQLModel, table=True):
    """A colleague's request for an introduction, decided only by the owner."""

    id: Optional[int] = Field(default=None, primary_key=True)
    team_id: str = Field(index=True)
    requester_slack_id: str
    owner_mailbox_id: int = Field(foreign_key="mailbox.id", index=True)
    organisation_id: int = Field(foreign_key="organisation.id")
    role_hint: Optional[str] = None
    reason: Optional[str] = None
    state: str = "pending"  # pending | approved_shared | approved_intro | declined | declined_silent | expired
    decided_by: Optional[str] = None
    decided_at: Optional[datetime] = None
    decline_note: Optional[str] = None
    reminded_at: Optional[datetime] = None
    expires_at: datetime
    created_at: datetime


class Block(SQLModel, table=True):
    """A person or domain an owner blocks: hidden everywhere and purged from the store."""

    __table_args__ = (UniqueConstraint("mailbox_id", "kind", "value"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    team_id: str = Field(default=LOCAL_TEAM, index=True)
    mailbox_id: int = Field(foreign_key="mailbox.id")
    kind: str  # address | domain | person | never_offer
    value: str
    created_at: datetime


class Tombstone(SQLModel, table=True):
    """A hashed key of data that was forgotten and must not come back after a resync."""

    __table_args__ = (UniqueConstraint("team_id", "kind", "key_hash"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    team_id: str = Field(default=LOCAL_TEAM, index=True)
    kind: str  # mailbox | address | domain
    key_hash: str
    created_at: datetime


class AuditEvent(SQLModel, table=True):
    """One search, request or decision, kept for the audit trail."""

    __table_args__ = (Index("ix_audit_actor_time", "team_id", "actor", "created_at"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    team_id: str = Field(default=LOCAL_TEAM)
    actor: str  # Slack user id, or cli:<login>
    action: str  # whoknows | intro_request | intro_decision | privacy_change | export | forget | merge
    target: Optional[str] = None
    detail: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime


class ProcessedEvent(SQLModel, table=True):
    """An idempotency key of a Slack event or click, so retries never repeat an effect."""

    __table_args__ = (UniqueConstraint("team_id", "key"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    team_id: str
    key: str
    created_at: datetime


class SchedulerLease(SQLModel, table=True):
    """The lease that lets exactly one process of a deployment run the scheduler.

    A deployment-wide row, so it has no team id.
    """

    name: str = Field(primary_key=True)
    holder: str
    expires_at: datetime
