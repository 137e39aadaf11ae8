"""`tether doctor`: what a job needs from this machine and its far sides, checked and explained.

    doctor/rules.py   pure: version parsing and the thresholds, each check's verdict, the report
    doctor/probes.py  asking the world: programs run as argument lists, locally or over ssh
    doctor/plan.py    which checks a job needs (only those), run once each, in parallel per host

Split so the rules are tested as data, and the probes are only ever the thin part that runs things.
"""
