"""Social personal CRM built on an Exchange mailbox, delivered in Slack."""

__version__ = "0.1.0"
