# make test: the README's test command. Installs everything the tests use (Debian packages when
#   missing, the project with its extras, the plugins, the one-file binary), checks lint, format
#   and types (mypy --strict, configured in pyproject.toml) so that a failure there stops before
#   the suite, then runs the tests: two at a time (pytest-xdist), each test file on one worker so
#   that its module's server is started once.
# make binary: the one-file executable dist/voicestack (PyInstaller; pip install -e '.[binary]').
.PHONY: binary test

test:
	bash scripts/install-test-deps.sh
	python3 -m ruff check .
	python3 -m ruff format --check .
	python3 -m mypy
	python3 -m pytest -n 2 --dist loadfile

binary:
	bash deploy/build-binary.sh
