"""MiMi (ajdruff/mimi): a bash `KEY=value` JOB.conf -> a mirror job to an ssh target.

MiMi rsyncs source_dir to ssh_connection_string:target_dir in a loop (`--archive --delete`
every DAEMON_INTERVAL seconds), and runs `sudo setfacl -R -m $permissions` and
`sudo chown -R` on the target over ssh. tether's job does the same with its own keys:
permissions, sync_owner, final_owner, sudo = true, and pushes each change as it happens.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

from tether.config import is_owner
from tether.endpoints import parse_endpoint
from tether.errors import ConfigError, UsageError
from tether.importers import Imported, TomlValue, shell, to_toml

NAME = "mimi"

_LOOKS = re.compile(r"(?m)^[ \t]*(?:export[ \t]+)?(source_dir|target_dir|ssh_connection_string)=")
_INTERVAL_KEYS = ("DAEMON_INTERVAL", "DAEMON_LOOP_INTERVAL")


def looks_like(text: str, path: Path) -> bool:
    return len(set(_LOOKS.findall(text))) >= 2


def acl(spec: str) -> tuple[str, list[str]]:
    """MiMi's permissions go to setfacl unquoted, so `A -m B` is two -m options: one comma list
    for tether's single -m, and the words that are not ACL entries."""
    entries: list[str] = []
    other: list[str] = []
    words = spec.split()
    i = 0
    while i < len(words):
        w = words[i]
        if w == "-m" and i + 1 < len(words):
            entries.append(words[i + 1])
            i += 2
            continue
        (other if w.startswith("-") else entries).append(w)
        i += 1
    return ",".join(entries), other


def convert(text: str, path: Path, name: str) -> Imported:
    imp = Imported()
    keys = shell.settle(shell.read(text, path), imp)

    def need(key: str, *aliases: str) -> shell.Assignment:
        for k in (key, *aliases):
            if k in keys and keys[k].value.strip():
                return keys.pop(k)
        raise ConfigError(f"{path}: no {key}: a MiMi config names source_dir, target_dir and ssh_connection_string")

    def error(a: shell.Assignment, message: str, hint: str | None = None) -> ConfigError:
        return ConfigError(f"{path}:{a.line}: {message}", hint)

    src, dst, conn = need("source_dir"), need("target_dir"), need("ssh_connection_string", "ssh_connection")
    source = os.path.expanduser(src.value.strip())
    if not os.path.isabs(source):
        raise error(src, f"source_dir {src.value!r} is not an absolute path", "MiMi wants an absolute path too")
    target = f"{conn.value.strip()}:{dst.value.strip()}"
    try:
        ep = parse_endpoint(target)
    except UsageError as e:
        raise error(conn, e.message, "ssh_connection_string is user@host or a Host of ~/.ssh/config") from None
    if ep.ssh_host is None:
        raise error(conn, f"{conn.value!r} is not an ssh host", "write user@host or a Host of ~/.ssh/config")
    job: dict[str, TomlValue] = {"source": source.rstrip("/") or "/", "targets": [target]}
    imp.note("target_dir", f"with ssh_connection_string: targets = [{target!r}]")

    interval = next((keys.pop(k) for k in _INTERVAL_KEYS if k in keys), None)
    if interval is not None:
        seconds = shell.integer(path, interval)
        job["interval"] = seconds
        imp.note(
            interval.key,
            f"interval = {seconds}: MiMi re-ran rsync every {seconds} s; tether pushes each change as it "
            "happens and runs a full pass every `interval` seconds as the safety net",
        )
    perms = keys.pop("permissions", None)
    if perms is not None and perms.value.strip():
        entries, other = acl(perms.value)
        if entries:
            job["permissions"] = entries
            imp.note(
                "permissions",
                f"permissions = {entries!r}: MiMi's `-m` parts joined into one ACL list, set with "
                "`setfacl -m` on what is synced (MiMi also cleared older ACL entries and set a default ACL)",
            )
        if other:
            imp.drop("permissions", f"setfacl options {shlex.join(other)!r}: tether only sets (-m) ACL entries")
    for key in ("sync_owner", "final_owner"):
        a = keys.pop(key, None)
        if a is None or not a.value.strip():
            continue
        if not is_owner(a.value.strip()):
            raise error(a, f"{key} {a.value!r} is not user or user:group")
        job[key] = a.value.strip()
    if any(k in job for k in ("permissions", "sync_owner", "final_owner")):
        job["sudo"] = True
        imp.note("sudo", "sudo = true: MiMi ran setfacl and chown on the target through sudo")
    if "sync_owner" in job:
        imp.note("sync_owner", "chown of what is synced while the job runs (tether start NAME), as MiMi did")
    if "final_owner" in job:
        imp.note("final_owner", "chown -R when the job stops (tether stop NAME), as MiMi did")
    pid = keys.pop("PID", None)
    if pid is not None:
        imp.note("PID", "MiMi's record of its running daemon, not a setting; tether keeps its own pid lock")
    for key, a in sorted(keys.items(), key=lambda kv: kv[1].line):
        if a.value.strip():
            imp.drop(key, "not a MiMi setting tether knows")
    imp.jobs[name] = to_toml(job, [f"imported from the MiMi config {path}", "by tether import-config"])
    return imp
