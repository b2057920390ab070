"""Telephony: phone calls through Twilio Media Streams (DESIGN §10).

A call's webhook is checked by its signature (signature.py) and answered with TwiML carrying a
one-time stream token (calls.py); the call's media stream then becomes a live conversation on a
new thread, through an adapter that speaks Media Streams to Twilio and VoiceClient to the
session (media.py).
"""
