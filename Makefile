# make test: the README's test command. Installs everything the tests use (Debian packages when
#   missing, the project with its extras, the plugins), then builds the one-file binary while it
#   checks lint, format and types (mypy --strict, configured in pyproject.toml), so that a failure
#   there stops before the suite, then runs the tests: two at a time (pytest-xdist), each test
#   file on one worker so that its module's server is started once.
#   The binary and the checks run side by side: each keeps one core busy for a minute or more,
#   and each one's output is printed whole when it ends (--output-sync).
# make checks: ruff check, ruff format --check and mypy, stopping at the first failure.
# make binary: the one-file executable dist/voicestack (PyInstaller; pip install -e '.[binary]').
.PHONY: binary checks test

test:
	bash scripts/install-test-deps.sh
	$(MAKE) --no-print-directory -j 2 --output-sync=target checks binary
	python3 -m pytest -n 2 --dist loadfile

checks:
	python3 -m ruff check .
	python3 -m ruff format --check .
	python3 -m mypy

binary:
	bash deploy/build-binary.sh
