# Sandbox test (static check off): try to leave something behind for the next candidate in the same
# warm worker — a file in /tmp and /dev/shm, a detached background process, an open socket — then finish
# normally.
import os
import subprocess

import torch
import torch.nn as nn

for d in ("/tmp", "/dev/shm"):
    try:
        with open(os.path.join(d, "planted"), "w") as f:
            f.write("from the previous candidate")
    except OSError:
        pass
import ctypes  # noqa: E402

ctypes.CDLL(None).shmget(0x4E41534C, 4096, 0o1666)  # a System V segment with a known key (IPC_CREAT|0666)
subprocess.Popen(["/bin/sh", "-c", "while true; do echo alive > /tmp/from-daemon; sleep 0.2; done"],
                 start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class Net(nn.Module):
    def __init__(self, num_classes=10, in_channels=3):
        super().__init__()
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x):
        return self.fc(x.mean((2, 3)))
