"""System-test plugin (module style): a crontable job every second that names its node.

Each run posts `tick NODE UNIXTIME` to #general; NODE comes from this plugin's section of
rtmbot.conf (`tick: {node: node1}`), the time from the wall clock every container shares
with the host, so the test can tell which node ran each tick and that none ran twice.
"""
import time

outputs = []
crontable = [[1, "tick"]]

settings = globals().get("config") or {}


def tick():
    outputs.append(["C1GENERAL", "tick %s %.3f" % (settings.get("node", "?"), time.time())])
