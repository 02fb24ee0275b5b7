# Attack: pass the pre-flight and the probe, then raise SystemExit once real training batches arrive
# (inside FLOP counting this became sandbox_error and stopped the search).
import torch
import torch.nn as nn


class Net(nn.Module):
    def __init__(self, num_classes=10, in_channels=3):
        super().__init__()
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x):
        if x.shape[0] > 2:
            raise SystemExit(0)
        return self.fc(x.mean((2, 3)))
