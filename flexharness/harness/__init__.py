"""The pytest side: options, collection into items, the controller's session, gates as test reports,
progress, shards and interrupts. Nothing below this package imports it."""
