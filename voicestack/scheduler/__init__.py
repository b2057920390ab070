"""The durable scheduler: jobs and crons in the `jobs` table, run at least once each.

It knows nothing of agents; a reply is a job the agent layer records and runs itself.
"""
