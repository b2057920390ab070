"""`python -m voicestack.testing.fake_openai --port N`: run the test provider on its own."""

import sys

from voicestack.testing.fake_openai.server import main

sys.exit(main())
