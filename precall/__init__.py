"""The `precall_webhook` side: webhook routes and their steps (signature, payload, audio, the pre-call flow)."""
