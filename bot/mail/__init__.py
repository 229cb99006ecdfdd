"""Mail sources (files, EWS, Microsoft Graph) and their import into the store."""
