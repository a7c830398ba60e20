"""Campaigns: drafts, the send lifecycle, per-language rendering and the delivery engine."""
