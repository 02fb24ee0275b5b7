# Attack (static check off): look everywhere the sandbox can reach for the test labels.
# Fails on purpose, naming every label-like file it could read, so the test can check none is the test split.
import os
import sys

import torch.nn as nn

SKIP = ("/usr", "/lib", "/lib64", "/bin", "/proc", "/sys", "/dev", sys.prefix, sys.base_prefix)
found = []
for top in {"/", os.path.dirname(os.path.abspath(sys.argv[3])) if len(sys.argv) > 3 else "/"}:
    for root, dirs, files in os.walk(top):
        dirs[:] = [d for d in dirs if not os.path.join(root, d).startswith(SKIP)]
        for f in files:
            path = os.path.join(root, f)
            if f.endswith("_y.npy") and os.access(path, os.R_OK):
                found.append(path)
        if len(found) > 50:
            break


class Net(nn.Module):
    def __init__(self, num_classes=10, in_channels=3):
        super().__init__()
        raise RuntimeError("LABELS " + ",".join(sorted(set(found))))
