"""What both functions share: the ElevenLabs account (client, this service's clones), lifecycle
events and where they go, configuration, secrets, logs and errors. Imports neither `precall` nor `cleanup`."""
