"""Readiness checks of a whole deployment (ElevenLabs, Twilio, Pub/Sub, the running service): `python -m doctor`.

An operator tool, not part of the image: it imports the service's packages to judge with their own
rules, and nothing on the service's run path imports it.
"""
