"""Real-component test rig for tether: throwaway sshd, nasty trees, exact tree comparison."""

from tests.rig.compare import assert_same_tree, diff_trees
from tests.rig.sshd import SshServer, SshServerError, start_sshd
from tests.rig.trees import HOSTILE_NAMES, TreeInfo, make_tree, touch_files

__all__ = [
    "HOSTILE_NAMES",
    "SshServer",
    "SshServerError",
    "TreeInfo",
    "assert_same_tree",
    "diff_trees",
    "make_tree",
    "start_sshd",
    "touch_files",
]
