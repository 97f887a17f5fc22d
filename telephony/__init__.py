"""The telephony front: a caller on a plain Twilio number is recorded (with consent), cloned and
handed to the ElevenLabs agent speaking in their own voice (docs/telephony.md).

Pure modules: `signature` (X-Twilio-Signature), `forms` (what Twilio posts), `twiml` (what the caller
hears), `timing` (how long the recording step may take). I/O: `twilio_client` (Twilio REST),
`connect` (ElevenLabs register-call), `recording` (the clone step), `app` (the routes).
"""
