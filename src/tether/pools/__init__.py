"""Pools: several storages (rclone remotes, local disks) used as one.

pools/placement.py   which member takes a new file: the policies, caps and reserves (pure)
"""
