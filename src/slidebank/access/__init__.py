"""Accounts, sign-in, tokens, the access policy and the audit trail."""
