import torch
import torch.nn as nn


class Net(nn.Module):
    """268M parameters (about 1 GiB of float32): must be rejected without ever being allocated."""

    def __init__(self, num_classes=10, in_channels=3):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 16, 3, padding=1)
        self.big = nn.Linear(16384, 16384)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        x = torch.relu(self.conv(x)).mean((2, 3))
        return self.fc(x)
