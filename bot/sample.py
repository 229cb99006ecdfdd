"""Generate a small sample mailbox of invented people, for the demo and for tests.

The mailbox belongs to Robin Hale at example.org. It contains two-way threads with people at
a few invented companies, one-way mail, a newsletter, an out-of-office reply, a colleague,
a person who moves to a new employer and writes once from a free-mail address. Every
domain is reserved for examples (example.com, example.net, example.org, *.example).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path

OWNER = ("Robin Hale", "robin.hale@example.org")


@dataclass(frozen=True)
class SamplePerson:
    name: str
    address: str
    every_days: int  # how often they exchange mail with the owner
    replies: bool  # whether the owner and they reply to each other


PEOPLE = [
    SamplePerson("Maja Lindqvist", "maja.lindqvist@bluepeak.example", 9, True),
    SamplePerson("Theo Marsh", "theo.marsh@bluepeak.example", 20, True),
    SamplePerson("Ana Silva", "ana.silva@harborfinch.example", 6, True),
    SamplePerson("Kofi Mensah", "kofi.mensah@harborfinch.example", 14, True),
    SamplePerson("Nadia Okafor", "nadia.okafor@northwind.example", 11, True),
    SamplePerson("Lee Wong", "lee.wong@orion-group.example", 30, True),
    SamplePerson("Ines Duarte", "ines.duarte@kestrel-dynamics.example", 45, False),
    SamplePerson("Jules Morel", "jules.morel@example.org", 4, True),
    SamplePerson("Sofia Lind", "sofia.lind@summit-dental.example", 25, True),
]
SUBJECTS = [
    "Pilot timeline", "Pricing for 2027", "Contract redlines", "Intro call", "Quarterly review",
    "Workshop agenda", "Follow-up from today", "Proposal draft", "Reference customer", "Data room access",
]


def _message(
    sender: tuple[str, str],
    to: list[tuple[str, str]],
    subject: str,
    when: datetime,
    *,
    in_reply_to: str | None = None,
    headers: dict[str, str] | None = None,
    body: str = "Thanks, see the notes below.\n",
) -> EmailMessage:
    message = EmailMessage()
    message["From"] = f"{sender[0]} <{sender[1]}>"
    message["To"] = ", ".join(f"{name} <{address}>" for name, address in to)
    message["Subject"] = subject
    message["Date"] = format_datetime(when)
    message["Message-ID"] = make_msgid(domain=sender[1].split("@", 1)[1])
    if in_reply_to:
        message["In-Reply-To"] = in_reply_to
        message["References"] = in_reply_to
    for key, value in (headers or {}).items():
        message[key] = value
    message.set_content(body)
    return message


def generate(target: Path, *, end: datetime | None = None, seed: int = 7) -> Path:
    """Write the sample mailbox as a Maildir tree (inbox and Sent folders) and return its path."""
    rng = random.Random(seed)
    end = end or datetime(2026, 11, 30, 17, 0, tzinfo=timezone.utc)
    start = end - timedelta(days=420)
    inbox: list[EmailMessage] = []
    sent: list[EmailMessage] = []
    for person in PEOPLE:
        # Theo's relationship went quiet four months ago, and Maja left Bluepeak a month ago.
        last = {"Theo Marsh": end - timedelta(days=120), "Maja Lindqvist": end - timedelta(days=30)}.get(person.name, end)
        when = start + timedelta(days=rng.randint(0, person.every_days))
        while when < last:
            subject = rng.choice(SUBJECTS)
            first = _message(OWNER, [(person.name, person.address)], subject, when)
            sent.append(first)
            if person.replies and rng.random() < 0.85:
                reply_at = when + timedelta(hours=rng.randint(1, 40))
                inbox.append(
                    _message(
                        (person.name, person.address), [OWNER], "Re: " + subject, reply_at,
                        in_reply_to=first["Message-ID"],
                    )
                )
            when += timedelta(days=max(1, int(rng.gauss(person.every_days, person.every_days / 4))))
    # Maja writes once from home, then moves to a new employer.
    inbox.append(_message(("Maja Lindqvist", "maja.l.home@gmail.com"), [OWNER], "Photos", end - timedelta(days=20)))
    inbox.append(
        _message(("Maja Lindqvist", "maja.lindqvist@orbit-labs.example"), [OWNER], "New role", end - timedelta(days=6))
    )
    # Noise that must not become a relationship.
    for week in range(30):
        inbox.append(
            _message(
                ("Growth Weekly", "news@mailer.example.net"), [OWNER], f"Growth Weekly #{week}",
                end - timedelta(days=7 * week),
                headers={"List-Unsubscribe": "<mailto:unsubscribe@mailer.example.net>", "Precedence": "bulk"},
            )
        )
    out = _message(OWNER, [("Ines Duarte", "ines.duarte@kestrel-dynamics.example")], "Catch-up", end - timedelta(days=3))
    sent.append(out)
    inbox.append(
        _message(
            ("Ines Duarte", "ines.duarte@kestrel-dynamics.example"), [OWNER], "Automatic reply: Catch-up",
            end - timedelta(days=3) + timedelta(minutes=1), headers={"Auto-Submitted": "auto-replied"},
        )
    )
    root = target / "robin.hale"
    for folder, messages in (("inbox", inbox), ("sent", sent)):
        directory = root / folder
        directory.mkdir(parents=True, exist_ok=True)
        for number, message in enumerate(messages, 1):
            (directory / f"{number}.").write_bytes(bytes(message))
    return root
