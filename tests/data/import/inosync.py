# inosync configuration (keys of setop/inosync's sample_config.py)

# directory that is watched for changes (absolute)
wpath = "/home/user/www"

# exclude list for rsync
rexcludes = [
    "*/6/*",
    "*.bin",
]

# directory the changes are rsynced to (absolute)
rpath = "/var/lib/www"

# remote locations in rsync syntax: "" for local, "user@host:" for remote
rnodes = [
    "user1@a.mirror.com:",
    "user2@b.mirror.com:",
]

# rsync binary
rsync = "/usr/bin/rsync"

# extra parameters to rsync
extra = "--rsh=ssh -a"

# limit the transfer speed (KB/s, 0 = no limit)
rspeed = 0

# rsync log file for updates
logfile = "log/inosync.log"
