"""Identifiers shared by the Block Kit builders and the listener registrations.

Slack sends ``action_id`` and ``callback_id`` back with every interaction, so a
builder and the listener that handles its buttons must use the same strings.
"""

from __future__ import annotations

# Slash commands, as declared in manifests/.
CRM_COMMAND = "/crm"
WHOKNOWS_COMMAND = "/whoknows"

# Buttons that run a /crm subcommand; the button value is the subcommand text,
# for example "top" or "contact dana@example.com".
RUN_COMMAND = "run_command"
OPEN_CONTACT = "open_contact"
REFRESH_HOME = "refresh_home"

# Buttons that decide on an item once: the value is a short reference such as
# "opp:5012", never the item's text.
APPROVE_DRAFT = "approve_draft"
EDIT_DRAFT = "edit_draft"
DISMISS_DRAFT = "dismiss_draft"
SHOW_DRAFT = "show_draft"

# Views.
RESULT_MODAL = "crm_result"
DRAFT_MODAL = "draft_full_text"

# Blocks whose id a listener or a test looks up.
HOME_ACTIONS_BLOCK = "home_actions"
HELP_ACTIONS_BLOCK = "help_actions"
