"""Message rows built by the Preparer, which file imports and reader processes share."""

from __future__ import annotations

import pickle
from datetime import datetime, timezone

from bot.mail.headers import parse_message, recipient_count
from bot.mail.ingest import MESSAGE_COLUMNS, PrepareContext, Preparer, fingerprint
from bot.mail.types import Batch, FolderRole, MailItem, Participant

NOW = datetime(2026, 6, 30, tzinfo=timezone.utc)
CONTEXT = PrepareContext(
    team_id="T1", mailbox_id=1, store_subjects=False, bulk_recipient_threshold=20, fold_plus=False, sqlite_times=True
)


def message(sender: str, day: int) -> bytes:
    return (
        f"From: {sender}\n"
        "To: Ann Lee <ann@partner.example>, bo@partner.example, ANN@partner.example\n"
        "Cc: cy@partner.example\nBcc: cy@partner.example\n"
        f"Date: Mon, {day} Jun 2026 10:00:00 +0000\nSubject: plan\n\nbody {day}\n"
    ).encode()


def parse(raw: bytes, ref: str) -> MailItem:
    return parse_message(raw, source_ref=ref, folder="inbox", folder_role=FolderRole.INBOX, now=NOW)


def test_same_lists_share_recipient_rows():
    first = parse(message("dee@partner.example", 1), "1")
    second = parse(message("Eve <eve@other.example>", 2), "2")
    batch = Preparer(CONTEXT).prepare(Batch("inbox", FolderRole.INBOX, [first, second]))
    (row1, sender1, pairs1), (row2, sender2, pairs2) = batch.entries
    recipients = (("ann@partner.example", "to"), ("bo@partner.example", "to"), ("cy@partner.example", "cc"))
    assert pairs1 == (recipients, (("dee@partner.example", "from"),))
    assert pairs2 == (recipients, (("eve@other.example", "from"),))
    assert pairs1[0] is pairs2[0]
    assert batch.wanted == {
        "ann@partner.example": ("Ann Lee", None),
        "bo@partner.example": (None, None),
        "cy@partner.example": (None, None),
        "dee@partner.example": (None, None),
        "eve@other.example": ("Eve", None),
    }
    count = MESSAGE_COLUMNS.index("recipient_count")
    assert row1[count] == 3
    assert row2[count] == 3
    digest = MESSAGE_COLUMNS.index("fingerprint")
    recipient_key = ",".join(sorted(address for address, _ in recipients))
    assert row1[digest] == fingerprint(first, sender1, recipient_key)
    assert row2[digest] == fingerprint(second, sender2, recipient_key)
    assert row1[digest] != row2[digest]
    # The pipe to the writer carries the shared group once, and it stays shared.
    received = pickle.loads(pickle.dumps(batch))
    assert received.entries[0][2][0] is received.entries[1][2][0]


def test_batch_merges_names_of_all_messages():
    # The first message carries no names, a copy of it names Ann, and a list rewrote the third.
    plain = MailItem(
        source_ref="1", folder="inbox", folder_role=FolderRole.INBOX, sent_at=NOW,
        sender=Participant("dee@partner.example"), to=(Participant("ann@partner.example"),),
    )
    named = MailItem(
        source_ref="2", folder="inbox", folder_role=FolderRole.INBOX, sent_at=NOW,
        sender=Participant("dee@partner.example", "Dee"), to=(Participant("ann@partner.example", "Ann Lee"),),
    )
    posted = MailItem(
        source_ref="3", folder="inbox", folder_role=FolderRole.INBOX, sent_at=NOW,
        sender=Participant("team@lists.partner.example", "Ann Lee via Team"),
        author=Participant("ann@partner.example", "Ann Lee"), list_id="team.lists.partner.example",
    )
    batch = Preparer(CONTEXT).prepare(Batch("inbox", FolderRole.INBOX, [plain, named, posted]))
    assert len(batch.entries) == 3
    assert batch.wanted["ann@partner.example"] == ("Ann Lee", None)
    assert batch.wanted["dee@partner.example"] == ("Dee", None)
    assert batch.wanted["team@lists.partner.example"][1] == "list"
    assert len(batch.wanted) == 3


def test_mutable_lists_are_not_cached():
    preparer = Preparer(CONTEXT)
    base = dict(source_ref="x", folder="inbox", folder_role=FolderRole.INBOX, sent_at=NOW, sender=Participant("dee@partner.example"))
    to = [Participant("ann@partner.example", "Ann")]
    first = preparer.prepare_item(MailItem(**base, to=to))
    to.append(Participant("bo@partner.example"))
    second = preparer.prepare_item(MailItem(**base, to=to))
    assert first is not None and second is not None
    assert first[2][0] == (("ann@partner.example", "to"),)
    assert second[2][0] == (("ann@partner.example", "to"), ("bo@partner.example", "to"))


def test_message_without_address_has_no_row():
    item = MailItem(source_ref="x", folder="inbox", folder_role=FolderRole.INBOX, sent_at=NOW, sender=Participant(None, "Ann"))
    assert Preparer(CONTEXT).prepare_item(item) is None


def test_recipient_in_two_lists_counts_once():
    cc = ", ".join(f"p{number}@partner.example" for number in range(15))
    raw = (
        f"From: dee@partner.example\nTo: ann@partner.example\nCc: {cc}\nBcc: {cc}, Ann Lee <ann@partner.example>\n"
        "Date: Mon, 1 Jun 2026 10:00:00 +0000\nSubject: plan\n\nbody\n"
    ).encode()
    item = parse(raw, "1")
    assert not item.is_bulk
    entry = Preparer(CONTEXT).prepare_item(item)
    assert entry is not None
    row, _, pairs, needed = entry
    assert [role for _, role in pairs[0]] == ["to"] + ["cc"] * 15
    assert row[MESSAGE_COLUMNS.index("recipient_count")] == 16
    assert not row[MESSAGE_COLUMNS.index("is_bulk")]
    # The name given only in Bcc still reaches the address book.
    assert ("ann@partner.example", "Ann Lee", None) in needed[0]


def test_distinct_recipients_over_threshold_are_bulk():
    to = ", ".join(f"p{number}@partner.example" for number in range(21))
    raw = f"From: dee@partner.example\nTo: {to}\nDate: Mon, 1 Jun 2026 10:00:00 +0000\n\nbody\n".encode()
    item = parse(raw, "1")
    assert item.is_bulk
    assert item.bulk_reason == "recipients-over-20"


def test_recipient_count_of_server_lists():
    to = [Participant("ann@partner.example"), Participant(None, "Team DN"), Participant(None, "Team DN")]
    cc = [Participant("ann@partner.example", "Ann"), Participant("bo@partner.example")]
    assert recipient_count(to, cc, []) == 4
