"""Faust agents: where an event enters (ingest), is applied (apply), is written (sink)."""
