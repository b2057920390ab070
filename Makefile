# make binary: the one-file executable dist/voicestack (PyInstaller; pip install -e '.[binary]').
# make test: the README's test command.
.PHONY: binary test

binary:
	bash deploy/build-binary.sh

test:
	python3 -m pytest -q
