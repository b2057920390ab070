# make test: the README's test command. Installs everything the tests use (Debian packages when
#   missing, the project with its extras, the plugins, the one-file binary), then runs them all.
# make binary: the one-file executable dist/voicestack (PyInstaller; pip install -e '.[binary]').
.PHONY: binary test

test:
	bash scripts/install-test-deps.sh
	python3 -m pytest

binary:
	bash deploy/build-binary.sh
