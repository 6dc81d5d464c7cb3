"""The outlet agent: one per store, the durable offline-first edge of retail sync.

The path of an event, module by module (SPEC "The picture"):
``api.py`` (HTTP, tokens, limits) -> ``log.py`` (SQLite WAL, group commit,
``outlet_seq``) -> ``forwarder.py`` (to Kafka, in seq order); ``view.py`` answers
the terminals' stock questions; ``cli.py`` runs and operates it.
"""
