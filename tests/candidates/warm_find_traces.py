# Sandbox test (static check off): fail on purpose, listing what an earlier candidate left behind:
# files in /tmp or /dev/shm, and processes other than this one and its parents.
import os
import time

import torch.nn as nn

time.sleep(0.5)  # a surviving daemon would have rewritten its file by now
mounts = [line.split()[4] for line in open("/proc/self/mountinfo")]  # the host's mounts (a venv under /tmp/...)
files = [p for d in ("/tmp", "/dev/shm", "/ctl") if os.path.isdir(d) for p in (os.path.join(d, f) for f in os.listdir(d))
         if not any(m == p or m.startswith(p + "/") for m in mounts)]
ipc = open("/proc/sysvipc/shm").read().splitlines()[1:] if os.path.exists("/proc/sysvipc/shm") else []
mine = {os.getpid(), os.getppid(), 1}
procs = []
for pid in os.listdir("/proc"):
    if pid.isdigit() and int(pid) not in mine:
        try:
            procs.append(open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode()[:60])
        except OSError:
            pass


class Net(nn.Module):
    def __init__(self, num_classes=10, in_channels=3):
        super().__init__()
        raise RuntimeError(f"TRACES files={sorted(files)} procs={procs} ipc={len(ipc)}")
