"""Locations: named sets of WORKING and BACKUP folders, and the actions between them.

`backup`, `work`, `transfer` and `tree` each plan (plan.py) from two scans (execute.py),
list the Plan, ask on the terminal (prompt.py) and apply exactly what was listed;
config.py reads `locations.toml`, cli.py holds the commands.
"""
