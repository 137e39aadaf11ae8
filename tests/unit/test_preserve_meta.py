"""The agent's metadata ops (read_meta / apply_meta), in-process on real files: exact xattr sets,
owners and ACL entries carried by name."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tether.agent_remote import Ops, dispatch, read_meta

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("setfacl"), reason="needs root (chown) and setfacl (acl package)"
)
ALL = ["owner", "group", "acl", "xattr"]


def meta_of(path: Path, scope: list[str] = ALL) -> dict[str, object]:
    fd = os.open(path, os.O_RDONLY)
    try:
        return read_meta(fd, os.fstat(fd), scope)
    finally:
        os.close(fd)


def getfacl(path: Path) -> str:
    return subprocess.run(["getfacl", "-c", "-n", path], capture_output=True, text=True, check=True).stdout


def test_put_gives_exactly_the_source_xattrs_not_an_inherited_default_acl(tmp_path: Path) -> None:
    src, dst = tmp_path / "s", tmp_path / "d"
    src.mkdir()
    (dst / "sub").mkdir(parents=True)
    subprocess.run(["setfacl", "-d", "-m", "u:nobody:rwx", dst / "sub"], check=True)  # new files inherit it
    (src / "f").write_text("x")
    os.setxattr(src / "f", "user.k", b"\x00\xffbytes")
    args = {"path": "sub/f", "mode": os.stat(src / "f").st_mode & 0o7777, "meta": meta_of(src / "f")}
    got = dispatch(Ops(str(dst)), "put", args, b"x")
    assert got == {"ok": True, "result": {"size": 1}}
    assert os.listxattr(dst / "sub" / "f") == ["user.k"]  # no system.posix_acl_access from the parent
    assert os.getxattr(dst / "sub" / "f", "user.k") == b"\x00\xffbytes"
    assert getfacl(dst / "sub" / "f") == getfacl(src / "f")


def test_owners_and_acl_entries_travel_by_name_with_the_number_as_fallback(tmp_path: Path) -> None:
    nobody = pwd.getpwnam("nobody").pw_uid
    (tmp_path / "f").write_text("x")
    subprocess.run(["setfacl", "-m", "u:nobody:r,u:4321:rw", tmp_path / "f"], check=True)
    meta = meta_of(tmp_path / "f", ["owner", "acl"])
    assert meta["names"] == {f"u{nobody}": "nobody"}  # 4321 has no name here: it travels as a number
    # the far side knows nobody by another number: what its name means there is what lands
    meta["names"] = {f"u{nobody}": "root"}
    meta["owner"] = [4242, "nobody"]
    dispatch(Ops(str(tmp_path)), "put", {"path": "g", "mode": 0o644, "meta": meta}, b"x")
    st = os.stat(tmp_path / "g")
    assert st.st_uid == nobody
    acl = getfacl(tmp_path / "g")
    assert "user:0:r--" in acl and "user:4321:rw-" in acl and f"user:{nobody}:" not in acl


def test_refusals_come_back_per_file_and_the_file_lands(tmp_path: Path) -> None:
    if not shutil.which("setpriv"):
        pytest.skip("setpriv (util-linux) is needed to drop root's chown capability")
    code = (
        "import sys; from tether.agent_remote import Ops, dispatch; "
        "r = dispatch(Ops(sys.argv[1]), 'put', {'path': 'f', 'mode': 0o644, "
        "'meta': {'owner': [1234, None], 'group': [1234, None]}}, b'x'); print(r)"
    )
    out = subprocess.run(
        ["setpriv", "--bounding-set", "-chown", sys.executable, "-c", code, tmp_path],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "'ok': True" in out.stdout and "f: cannot set owner 1234:1234: Operation not permitted" in out.stdout
    assert (tmp_path / "f").read_bytes() == b"x"
