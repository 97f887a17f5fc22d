"""Local stand-ins for the cloud: the ElevenLabs API server, the Pub/Sub emulator and process helpers.

Used by `make run` (sandbox mode), the tests and the benchmark; never by the deployed service.
"""
