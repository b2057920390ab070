"""Voice: recorded audio in (format detection, transcription), spoken replies out (speech).

`POST /voice` stores an upload in the `files` table, transcribes it and starts a reply exactly as
a typed message does; a reply asked to speak is synthesized sentence by sentence while it
streams, each sentence's audio a `files` row announced by a `speech` event on the thread feed.
"""
