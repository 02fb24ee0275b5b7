import os
import sys
import time

import torch.nn as nn

# Takes host disk no walk of its output directory sees: opens files there, unlinks them and writes into the
# open files (each under the file-size limit). Bounded here at 2.4 GiB, then holds them: a test must not fill
# the disk if the host does not stop it. Needs the static check off (open, os, sys).
try:
    log_dir = os.path.dirname(os.readlink("/proc/self/fd/1"))
except OSError:
    log_dir = ""
out = next(d for d in (log_dir, sys.argv[-1], "/out") if os.path.isdir(d) and os.access(d, os.W_OK))
chunk = b"\1" * (64 << 20)
held = []
for i in range(6):  # 400 MiB each
    f = open(os.path.join(out, f"hidden{i}"), "wb")
    os.unlink(f.name)
    held.append(f)
    for _ in range(6):
        f.write(chunk)
    f.write(chunk[: 16 << 20])
    f.flush()
while True:
    time.sleep(1)

class Net(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x):
        return self.fc(x.mean((2, 3)))
