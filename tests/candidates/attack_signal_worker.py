# Attack (static check off): signal PID 1 — the warm worker, or the cold container's kill-timer — with
# every catchable signal, hoping to kill it (Python's default SIGINT handler would raise KeyboardInterrupt
# in the worker) so that the search stops. Then train normally.
import os
import signal

import torch
import torch.nn as nn

for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGQUIT):
    try:
        os.kill(1, sig)
    except OSError:
        pass


class Net(nn.Module):
    def __init__(self, num_classes=10, in_channels=3):
        super().__init__()
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(x.mean((2, 3)), 1))
