# Attack (static check off): look for data sets that ship inside installed packages — scikit-learn's
# digits.csv.gz holds every digits image with its label, i.e. the default data set's test labels.
import importlib.util
import os
import sys

import torch.nn as nn

found = []
for top in {p for p in sys.path if p and os.path.isdir(p)}:
    for root, dirs, files in os.walk(top):
        found += [os.path.join(root, f) for f in files if f.endswith(".csv.gz") or f.startswith("digits")]
spec = importlib.util.find_spec("sklearn")
sk = spec is not None and spec.origin is not None  # an empty directory is at most a namespace package


class Net(nn.Module):
    def __init__(self, num_classes=10, in_channels=3):
        super().__init__()
        raise RuntimeError(f"SKLEARN {sk} DATA {','.join(os.path.basename(f) for f in found)[:600]}")
