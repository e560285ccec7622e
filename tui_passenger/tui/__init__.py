"""The terminal dashboard: renders core snapshots and sends intents (see :mod:`.app`)."""
