"""The `cleanup_voices` side: deletes clones once their call is over (SPEC 6)."""
