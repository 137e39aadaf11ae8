"""osync (deajan/osync): a bash `KEY=value` sync.conf -> a bisync job.

osync's initiator becomes path1 and its target path2, so CONFLICT_PREVALANCE=initiator is
conflict = "path1". Both the current keys (INITIATOR_SYNC_DIR, TARGET_SYNC_DIR as a path or
ssh://user@host:port//path) and the old ones (MASTER_/SLAVE_SYNC_DIR, REMOTE_SYNC,
REMOTE_HOST, ...) are read. Every other key becomes a tether setting, is explained as covered
by what tether always does, or is listed as dropped with why.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

from tether.endpoints import parse_endpoint
from tether.errors import ConfigError, UsageError
from tether.importers import Imported, TomlValue, patterns, shell, ssh_spec, to_toml

NAME = "osync"

# Keys only osync writes; one of them at the start of a line is enough to recognise the file.
_MARKERS = (
    "INITIATOR_SYNC_DIR", "TARGET_SYNC_DIR", "MASTER_SYNC_DIR", "SLAVE_SYNC_DIR", "INSTANCE_ID",
    "CONFLICT_PREVALANCE", "SOFT_DELETE_DAYS", "CONFLICT_BACKUP_DAYS", "RSYNC_PATTERN_FIRST",
    "SOFT_MAX_EXEC_TIME", "HARD_MAX_EXEC_TIME", "LOCAL_RUN_BEFORE_CMD", "REMOTE_RUN_BEFORE_CMD",
)  # fmt: skip
_LOOKS = re.compile(r"(?m)^[ \t]*(?:export[ \t]+)?(?:" + "|".join(_MARKERS) + r")=")

FOREVER_DAYS = 36500  # osync's 0 days = keep forever; tether counts days, so a century
OSYNC_DIR = ".osync_workdir"

# Settings tether has no way to honour; a value other than empty/false/0 is dropped with this why.
_DROP_WHEN_SET = {
    "LOGFILE": "tether keeps a log per job in its state dir (`tether log NAME`); it cannot be moved",
    "MINIMUM_SPACE": "without DESTINATION_MAILS there is nobody to tell of low free space",
    "SUDO_EXEC": "tether's agent runs as the ssh user; there is no sudo mode for bisync",
    "RSYNC_REMOTE_PATH": "tether runs `rsync` from the far side's PATH",
    "REMOTE_RSYNC_PATH": "tether runs `rsync` from the far side's PATH",
    "INITIATOR_CUSTOM_STATE_DIR": "tether keeps its state in its own state dir and .tether/ in each replica",
    "TARGET_CUSTOM_STATE_DIR": "tether keeps its state in its own state dir and .tether/ in each replica",
    "SSH_PASSWORD_FILE": "tether runs ssh with BatchMode=yes: keys only, never a password",
    "KRB5": "set GSSAPIAuthentication in ~/.ssh/config for that host instead",
    "_REMOTE_TOKEN": "osync's ssh_filter token: tether needs no forced command; remove osync's "
    "command= restriction from the target's authorized_keys, or tether's agent cannot start",
    "SSH_COMPRESSION": "set `Compression yes` for that host in ~/.ssh/config instead",
    "SSH_OPTIONAL_ARGS": "put ssh options in ~/.ssh/config for that host instead",
    "SSH_IGNORE_KNOWN_HOSTS": "tether never turns host-key checking off; connect once with ssh to accept the key",
    "REMOTE_HOST_PING": "tether does not ping first; an unreachable host fails the pass with the cause",
    "REMOTE_3RD_PARTY_HOSTS": "tether does not ping other hosts before a pass",
    "RSYNC_OPTIONAL_ARGS": "bisync chooses rsync's options itself (a job has no rsync_args)",
    "COPY_SYMLINKS": "bisync syncs symlinks as links, never their targets",
    "KEEP_DIRLINKS": "bisync syncs symlinks as links, never their targets",
    "PRESERVE_HARDLINKS": "bisync does not keep hard links: each name is a file of its own (a mirror job does)",
    "CHECKSUM": "tether finds changes by size, mtime (ns), inode and mode, and compares bytes only "
    "where both sides changed; there is no full-checksum mode",
    "RSYNC_COMPRESS": "tether does not compress; `Compression yes` in ~/.ssh/config compresses the link",
    "PARTIAL": "an interrupted copy is started again by the next pass, not resumed",
    "ALERT_CONFLICTS": "without DESTINATION_MAILS nobody is mailed; `tether conflicts NAME` lists open conflicts",
    "SKIP_DELETION": "bisync propagates deletions both ways (to the other side's trash); it cannot skip them",
    "SYNC_TYPE": "bisync is two-way; for one way use a mirror job (`tether mirror`, jobs without kind)",
    "FORCE_STRANGER_LOCK_RESUME": "tether takes over a lock whose holder is dead, never a live one's",
}
# What bisync keeps when a job's `preserve` names it.
_PRESERVE = {"PRESERVE_OWNER": "owner", "PRESERVE_GROUP": "group", "PRESERVE_ACL": "acl", "PRESERVE_XATTR": "xattr"}
# What tether always does; setting these off asks for something it cannot do.
_DROP_WHEN_OFF = {
    "PRESERVE_PERMISSIONS": "bisync always keeps file modes",
    "PRESERVE_EXECUTABILITY": "bisync always keeps file modes",
    "DELTA_COPIES": "tether's rsync copies always use the old version as delta basis",
}
# Covered by what tether does on its own (said, whatever the value).
_COVERED = {
    "CONFIG_FILE_REVISION": "osync's file format version: nothing to carry",
    "CREATE_DIRS": "tether makes a missing replica root on the first pass (later a vanished one stops the pass)",
    "RESUME_SYNC": "tether's passes are crash-safe: the next pass continues where one stopped",
    "RESUME_TRY": "tether's passes are crash-safe: the next pass continues where one stopped",
    "KEEP_LOGGING": "`tether status NAME` shows a running job and its last pass",
    "SSH_CONTROLMASTER": "tether always shares one ssh connection per host",
    "LOG_CONFLICTS": "`tether conflicts NAME` lists the open conflicts",
    "SOFT_DELETE": "tether always keeps deletions in the replica's .tether/versions/",
    "MIN_WAIT": "tether needs no settle time: each file is re-checked as it is copied, and one "
    "still being written is skipped and taken by the next pass",
    "REMOTE_SYNC": "not used: the replica's ssh:// address says it is remote",
    "REMOTE_USER": "not used: the replica's ssh:// address names the user",
    "REMOTE_HOST": "not used: the replica's ssh:// address names the host",
    "REMOTE_PORT": "not used: the replica's ssh:// address names the port",
}
# Only used when one replica is remote; with two local replicas osync ignores them too.
_REMOTE_ONLY = {
    "SSH_RSA_PRIVATE_KEY", "SSH_PASSWORD_FILE", "KRB5", "_REMOTE_TOKEN", "SSH_COMPRESSION",
    "SSH_OPTIONAL_ARGS", "SSH_IGNORE_KNOWN_HOSTS", "SSH_CONTROLMASTER", "REMOTE_HOST_PING",
    "REMOTE_3RD_PARTY_HOSTS", "RSYNC_REMOTE_PATH", "REMOTE_RSYNC_PATH", "RSYNC_COMPRESS",
    "REMOTE_RUN_BEFORE_CMD", "REMOTE_RUN_AFTER_CMD", "REMOTE_USER", "REMOTE_HOST", "REMOTE_PORT",
}  # fmt: skip
_SHELL_CHARS = set("|&;<>()$`\\\"'*?[]{}~#\n")


def looks_like(text: str, path: Path) -> bool:
    return _LOOKS.search(text) is not None


def _off(value: str) -> bool:
    return value.strip().lower() in shell.FALSE_WORDS


def command(cmd: str) -> tuple[list[str], str]:
    """osync runs a command string through the shell; tether takes an argument list."""
    if _SHELL_CHARS & set(cmd):
        return ["sh", "-c", cmd], "run by `sh -c`, as osync ran it through the shell"
    return shlex.split(cmd), "split into arguments as the shell did"


class _Convert:
    def __init__(self, path: Path, keys: dict[str, shell.Assignment], imp: Imported) -> None:
        self.path, self.keys, self.imp = path, keys, imp
        self.used: set[str] = set()
        self.job: dict[str, TomlValue] = {"kind": "bisync"}
        self.remote_side: str | None = None  # "path1" or "path2" when that replica is over ssh
        self.alerts: dict[str, TomlValue] = {}  # [alerts] and [alerts.email], when osync mailed
        self.email: dict[str, TomlValue] = {}

    def get(self, key: str) -> shell.Assignment | None:
        self.used.add(key)
        return self.keys.get(key)

    def value(self, key: str) -> str:
        a = self.get(key)
        return a.value.strip() if a else ""

    def flag(self, key: str, default: bool) -> bool:
        a = self.get(key)
        return default if a is None else shell.boolean(self.path, a)

    def number(self, key: str) -> int | None:
        a = self.get(key)
        return None if a is None or a.value.strip() == "" else shell.integer(self.path, a)

    def error(self, key: str, message: str, hint: str | None = None) -> ConfigError:
        a = self.keys.get(key)
        return ConfigError(f"{self.path}:{a.line}: {message}" if a else f"{self.path}: {message}", hint)

    # -- the replicas

    def replicas(self) -> None:
        """path1 and path2, local paths or user@host:path."""
        legacy = "MASTER_SYNC_DIR" in self.keys and "INITIATOR_SYNC_DIR" not in self.keys
        first, second = ("MASTER_SYNC_DIR", "SLAVE_SYNC_DIR") if legacy else ("INITIATOR_SYNC_DIR", "TARGET_SYNC_DIR")
        missing = [k for k in (first, second) if not self.value(k)]
        if missing:
            raise ConfigError(
                f"{self.path}: no {' and no '.join(missing)}: an osync config names both replicas",
                'add e.g. INITIATOR_SYNC_DIR="/home/me/dir1" and TARGET_SYNC_DIR="ssh://me@host//srv/dir2"',
            )
        legacy_remote = legacy and self.flag("REMOTE_SYNC", False)
        for key, side in ((first, "path1"), (second, "path2")):
            raw = self.value(key)
            if raw.startswith("ssh://"):
                spec = self.ssh_uri(key, raw)
                self.remote_side = side
            elif legacy_remote and side == "path2":
                spec = self.legacy_ssh(key, raw)
                self.remote_side = side
            else:
                spec = self.local(key, raw)
            try:
                parse_endpoint(spec)
            except UsageError as e:
                raise self.error(key, e.message, e.hint) from None
            self.job[side] = spec
        self.imp.note(first, "osync's initiator is tether's path1")
        self.imp.note(second, "osync's target is tether's path2")

    def local(self, key: str, raw: str) -> str:
        spec = os.path.expanduser(raw)
        if not os.path.isabs(spec):
            spec = os.path.normpath(self.path.parent / spec)
            self.imp.note(key, f"relative path {raw!r} taken from the config's folder: {spec}")
        return spec.rstrip("/") or "/"

    def ssh_uri(self, key: str, raw: str) -> str:
        """ssh://[user@]host[:port]//abs/path, read the way osync reads it."""
        uri = raw[len("ssh://") :]
        user = uri.rsplit("@", 1)[0] if "@" in uri else ""
        rest = uri.split("@", 1)[1] if "@" in uri else uri
        hostport, _, rpath = rest.partition("/")
        host, _, port = hostport.partition(":")
        if not host or not rpath:
            raise self.error(key, f"{raw!r} is not ssh://[user@]host[:port]//path", "as osync's sync.conf shows")
        return ssh_spec(self.imp, key, user, host, port, rpath)

    def legacy_ssh(self, key: str, raw: str) -> str:
        host = self.value("REMOTE_HOST")
        if not host:
            raise self.error("REMOTE_SYNC", "REMOTE_SYNC is on but REMOTE_HOST is empty", "name the slave's host")
        for k in ("REMOTE_SYNC", "REMOTE_HOST"):
            self.imp.note(k, f"the slave replica is over ssh: {key} on {host}")
        return ssh_spec(self.imp, "REMOTE_PORT", self.value("REMOTE_USER"), host, self.value("REMOTE_PORT"), raw)

    # -- what to sync

    def filters(self) -> None:
        sep = self.value("PATH_SEPARATOR_CHAR") or ";"
        first = self.value("RSYNC_PATTERN_FIRST") or "include"
        if first not in ("include", "exclude"):
            raise self.error("RSYNC_PATTERN_FIRST", f"RSYNC_PATTERN_FIRST must be include or exclude, not {first!r}")
        found: dict[str, list[str]] = {"exclude": [], "include": []}
        for kind in ("exclude", "include"):
            key = f"RSYNC_{kind.upper()}_PATTERN"
            pats, changed = patterns.translate(self.value(key).split(sep))
            if changed:
                self.imp.note(key, patterns.explain(changed))
            found[kind] += pats
            found[kind] += self.pattern_file(f"RSYNC_{kind.upper()}_FROM")
        excludes = [f"/{OSYNC_DIR}/", *found["exclude"]]
        self.imp.note(
            f"({OSYNC_DIR})",
            f"osync's own folder in each replica (state, backups, deleted files) stays out of the sync, "
            f"as it did for osync: exclude = /{OSYNC_DIR}/; delete it when you no longer need it",
        )
        self.job["exclude"] = excludes
        if found["include"] and first == "exclude":
            self.imp.note(
                "RSYNC_PATTERN_FIRST",
                "exclude first: an include only takes back what no exclude matched, which is synced "
                "anyway, so the includes change nothing and are left out",
            )
        elif found["include"]:
            self.job["include"] = found["include"]
            if found["exclude"]:
                self.imp.note("RSYNC_PATTERN_FIRST", "include first: an include takes back what an exclude matched")

    def pattern_file(self, key: str) -> list[str]:
        name = self.value(key)
        if not name:
            return []
        file = self.path.parent / name if "/" not in name else Path(os.path.expanduser(name))
        try:
            lines = file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            self.imp.drop(key, f"cannot read {file}: {getattr(e, 'strerror', None) or e}")
            return []
        kind = key.split("_")[1].lower()
        raw: list[str] = []
        for line in lines:
            if not line.strip() or line.startswith(("#", ";")):
                continue
            sign, pat = (line[0], line[2:]) if line[:2] in ("+ ", "- ") else ("", line)
            if sign and (sign == "+") != (kind == "include"):
                self.imp.drop(f"{key} ({line.strip()})", f"a {sign} rule in a {kind} file: the order is not kept")
                continue
            raw.append(pat)
        pats, changed = patterns.translate(raw)
        how = f"the patterns of {file} are written into the job"
        self.imp.note(key, how + ("; " + patterns.explain(changed) if changed else ""))
        return pats

    # -- conflicts, versions, time limits

    def conflicts(self) -> None:
        """osync copies with `rsync -u` from the prevailing replica first: the newer version wins and
        CONFLICT_PREVALANCE only settles a tie of timestamps. That is tether's `newer`."""
        a = self.get("CONFLICT_PREVALANCE")
        side = (a.value.strip().lower() if a else "") or "initiator"
        tie = {"initiator": "path1", "master": "path1", "target": "path2", "slave": "path2"}.get(side)
        if tie is None:
            raise self.error("CONFLICT_PREVALANCE", f"CONFLICT_PREVALANCE must be initiator or target, not {side!r}")
        self.job["conflict"] = "newer"
        how = (
            'conflict = "newer": osync synced the newer version and the prevailing replica won only a tie '
            f"of timestamps; the other version goes to that side's .tether/versions/. {side} is {tie}"
        )
        if tie == "path1":
            how += ", which tether's `newer` also keeps on a tie"
        else:
            how += "; on an exact tie (same mtime to the nanosecond) tether's `newer` keeps path1"
        self.imp.note("CONFLICT_PREVALANCE" if a else "CONFLICT_PREVALANCE (unset)", how)
        backup = self.flag("CONFLICT_BACKUP", True)
        multiple = self.get("CONFLICT_BACKUP_MULTIPLE")
        if not backup:
            self.job["backups_keep"] = 1
            self.imp.note("CONFLICT_BACKUP", "tether always keeps the replaced version: backups_keep = 1 is the least")
        elif multiple is not None and not shell.boolean(self.path, multiple):
            self.job["backups_keep"] = 1
            self.imp.note("CONFLICT_BACKUP_MULTIPLE", "one backup per file: backups_keep = 1")
        elif multiple is not None:
            self.imp.note(
                "CONFLICT_BACKUP_MULTIPLE",
                "osync kept every version until its days ran out; tether keeps the last 10 per file "
                "(backups_keep = 10, raise it in the job)",
            )
        days: dict[str, int] = {}
        for key in ("CONFLICT_BACKUP_DAYS", "SOFT_DELETE_DAYS"):
            n = self.number(key)
            if n is not None:
                days[key] = FOREVER_DAYS if n == 0 else n
        if days:
            keep = max(days.values())
            self.job["trash_days"] = keep
            for key, n in days.items():
                said = "0 (keep forever) -> " if n == FOREVER_DAYS else ""
                self.imp.note(
                    key,
                    f"{said}trash_days = {keep}: tether has one number of days for its trash and backups"
                    + (" (the longer of the two)" if len(days) > 1 else ""),
                )

    def limits(self) -> None:
        for key, field in (("SOFT_MAX_EXEC_TIME", "max_time_soft"), ("HARD_MAX_EXEC_TIME", "max_time_hard")):
            n = self.number(key)
            if n:
                self.job[field] = n
                how = "seconds, as in osync" if field == "max_time_soft" else (
                    "seconds; tether stops the pass cleanly (state consistent) and the next pass continues"
                )  # fmt: skip
                self.imp.note(key, f"{field} = {n} ({how})")
        wait = self.number("MAX_WAIT")
        if wait:
            self.job["interval"] = wait
            self.imp.note(
                "MAX_WAIT", f"interval = {wait}: `tether start NAME` (osync's --on-changes) passes at least this often"
            )
        bw = self.number("BANDWIDTH")
        if bw:
            self.job["bwlimit"] = str(bw)
            self.imp.note(
                "BANDWIDTH",
                f'bwlimit = "{bw}" (KB/s as rsync reads it); it limits tether\'s rsync copies, files over '
                "4 MB; smaller files travel in its agent's messages",
            )

    # -- before / after commands

    def commands(self) -> None:
        local = {w: self.value(f"LOCAL_RUN_{w.upper()}_CMD") for w in ("before", "after")}
        far = {w: self.value(f"REMOTE_RUN_{w.upper()}_CMD") for w in ("before", "after")}
        use, origin = local, "LOCAL"
        for w, cmd in far.items():
            key = f"REMOTE_RUN_{w.upper()}_CMD"
            if not cmd:
                continue
            if self.remote_side is None:
                self.imp.note(key, "not used: both replicas are local (osync ignores it too)")
            elif any(local.values()):
                self.imp.drop(key, "tether runs before/after commands on one side; the local ones were kept")
            else:
                use, origin = far, "REMOTE"
                self.job["commands_on"] = self.remote_side
                self.imp.note(key, f'commands_on = "{self.remote_side}": run over ssh, in that replica\'s root')
        for w, cmd in use.items():
            if cmd:
                argv, how = command(cmd)
                self.job[w] = argv
                self.imp.note(f"{origin}_RUN_{w.upper()}_CMD", f"{w} = {argv!r}: {how}")
        if not self.flag("STOP_ON_CMD_ERROR", True):
            self.job["before_fails"] = "continue"
            self.imp.note("STOP_ON_CMD_ERROR", 'before_fails = "continue": a failing `before` is said, the pass runs')
        after_on_error = self.flag("RUN_AFTER_CMD_ON_ERROR", False)  # osync's default: not after an error
        if use["after"]:
            self.job["after_on_error"] = after_on_error
            self.imp.note("RUN_AFTER_CMD_ON_ERROR", f"after_on_error = {'true' if after_on_error else 'false'}")
        limits = [self.number("MAX_EXEC_TIME_PER_CMD_BEFORE"), self.number("MAX_EXEC_TIME_PER_CMD_AFTER")]
        if any(use.values()):
            longest = max((n for n in limits if n), default=0)
            if longest:
                self.job["command_timeout"] = longest
                self.imp.note("MAX_EXEC_TIME_PER_CMD_BEFORE", f"command_timeout = {longest} s, for both commands")
            elif any(n is not None for n in limits):
                self.imp.note("MAX_EXEC_TIME_PER_CMD_BEFORE", "0 (never killed): tether stops a command after "
                              "command_timeout, 300 s unless the job sets more")  # fmt: skip

    # -- everything else

    def preserve(self) -> None:
        """osync's PRESERVE_OWNER/GROUP/ACL/XATTR: the job's preserve list (rsync's -o -g -A -X)."""
        kept = []
        for key, word in _PRESERVE.items():
            a = self.keys.get(key)
            if a is None:
                continue
            self.used.add(key)
            if _off(a.value):
                self.imp.note(key, f"off: {word!r} is not in the job's preserve")
            else:
                kept.append(word)
                self.imp.note(key, f"{word!r} in the job's preserve: kept both ways, by every copy")
        if kept:
            self.job["preserve"] = kept

    def the_rest(self) -> None:
        for key in ("INSTANCE_ID", "SYNC_ID"):
            if self.get(key):
                self.imp.note(key, "osync's name for logs and locks; the tether job's name is its file name")
        exe = self.value("RSYNC_EXECUTABLE")
        if exe and exe != "rsync":
            self.imp.drop("RSYNC_EXECUTABLE", "bisync runs `rsync` from PATH")
        for key, a in sorted(self.keys.items(), key=lambda kv: kv[1].line):
            if key in self.used:
                continue
            self.used.add(key)
            v = a.value
            if key in _REMOTE_ONLY and self.remote_side is None:
                if not _off(v):
                    self.imp.note(key, "not used: both replicas are local (osync ignores it too)")
            elif key == "SSH_RSA_PRIVATE_KEY":
                if v.strip() in ("~/.ssh/id_rsa", os.path.expanduser("~/.ssh/id_rsa")):
                    self.imp.note(key, "ssh tries ~/.ssh/id_rsa by itself")
                elif v.strip():
                    self.imp.drop(key, "set `IdentityFile` for that host in ~/.ssh/config instead")
            elif key in _DROP_WHEN_SET:
                if not _off(v):
                    self.imp.drop(key, _DROP_WHEN_SET[key])
            elif key in _DROP_WHEN_OFF:
                if not shell.boolean(self.path, a):
                    self.imp.drop(key, _DROP_WHEN_OFF[key])
            elif key in _COVERED:
                self.imp.note(key, _COVERED[key])
            else:
                self.imp.drop(key, "not an osync setting tether knows")

    # -- mail

    def mail(self) -> None:
        """osync's mail settings -> the job's [alerts] email (osync mailed a run's warnings and
        errors; tether mails the same events, see README *Alerts*)."""
        to = self.value("DESTINATION_MAILS")
        if not to:
            return
        enc = (self.value("SMTP_ENCRYPTION") or "none").lower()
        security = {"none": "none", "tls": "starttls", "ssl": "tls"}.get(enc)
        if security is None:
            raise self.error("SMTP_ENCRYPTION", f"SMTP_ENCRYPTION must be none, tls or ssl, not {enc!r}")
        host = self.value("SMTP_SERVER") or "localhost"
        email: dict[str, TomlValue] = {"host": host, "security": security, "to": re.split(r"[\s,;]+", to)}
        port = self.number("SMTP_PORT")
        if port:
            email["port"] = port
        if self.value("SENDER_MAIL"):
            email["from"] = self.value("SENDER_MAIL")
        self.imp.note("DESTINATION_MAILS", f"[alerts] email to {to}: a failed pass, conflicts, a target down, "
                      "low free space are mailed (`tether alert test NAME` sends a test)")  # fmt: skip
        self.imp.note("SMTP_SERVER" if self.value("SMTP_SERVER") else "SMTP_SERVER (unset)",
                      f"host = {host!r}" + ("" if self.value("SMTP_SERVER") else ": osync handed mail to the "
                      "local mailer; tether speaks SMTP, to this machine's mail server on port 25"))  # fmt: skip
        self.imp.note("SMTP_ENCRYPTION", f'security = "{security}" (osync\'s {enc})')
        for key, how in (("SMTP_PORT", "port"), ("SENDER_MAIL", "from"), ("MAIL_BODY_CHARSET", "tether mails UTF-8")):
            if self.value(key):
                self.imp.note(key, how)
        if self.value("SMTP_USER"):
            email["user"] = self.value("SMTP_USER")
            email["password_env"] = "TETHER_SMTP_PASSWORD"
            self.imp.note("SMTP_USER", "user, with the password read from $TETHER_SMTP_PASSWORD (or write "
                          'password_file = "..." instead)')  # fmt: skip
        if self.value("SMTP_PASSWORD"):
            self.imp.drop("SMTP_PASSWORD", "tether never keeps a password in a job file: put it in "
                          "$TETHER_SMTP_PASSWORD where the job runs, or in a file only you can read, named "
                          "by password_file in [alerts.email]")  # fmt: skip
        else:
            self.get("SMTP_PASSWORD")
        if self.flag("ALWAYS_SEND_MAILS", False):
            self.imp.drop("ALWAYS_SEND_MAILS", "tether mails only when something is wrong; a heartbeat URL "
                          "(heartbeat = \"https://...\" in [alerts]) says each pass that went well")  # fmt: skip
        if self.get("ALERT_CONFLICTS") is not None:
            self.imp.note("ALERT_CONFLICTS", "conflicts are mailed, one message per pass, whatever this said")
        space = self.number("MINIMUM_SPACE")
        if space:
            self.alerts["min_free"] = space * 1024
            self.imp.note("MINIMUM_SPACE", f"min_free = {space * 1024} (osync's KB): mailed when a replica has "
                          "less after a pass; tether does not refuse the pass for it, as osync did")  # fmt: skip
        self.email = email

    def run(self) -> dict[str, TomlValue]:
        self.replicas()
        self.filters()
        self.conflicts()
        self.limits()
        self.commands()
        self.preserve()
        self.mail()
        self.the_rest()
        return self.job


def convert(text: str, path: Path, name: str) -> Imported:
    imp = Imported()
    keys = shell.settle(shell.read(text, path, sections=True), imp)
    conv = _Convert(path, keys, imp)
    job = conv.run()
    lines = {k: a.line for k, a in keys.items()}
    order = lambda kv: lines.get(kv[0].split(" ")[0], 0)  # noqa: E731
    imp.notes.sort(key=order)
    imp.dropped.sort(key=order)
    tables = {"alerts": conv.alerts, "alerts.email": conv.email} if conv.email else {}
    imp.jobs[name] = to_toml(job, [f"imported from the osync config {path}", "by tether import-config"], tables)
    return imp
