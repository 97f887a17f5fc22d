"""The `cleanup_voices` side: deletes clones once their call is over (docs/events.md)."""
