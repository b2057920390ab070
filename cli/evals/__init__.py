"""`voicestack eval`: scenario files replayed against a server, with expectations on each reply.

scenario.py reads and checks the YAML files, runner.py plays each scenario in a fresh thread
over the public HTTP API, expectations.py and judge.py decide each expectation, and report.py
shows and writes the results.
"""
