import torch
import torch.nn as nn


class Net(nn.Module):
    """Uses .item() in forward: the meta pre-flight cannot run it, so the real run must decide."""

    def __init__(self, num_classes=10, in_channels=3):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 8, 3, padding=1)
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x):
        scale = 1.0 if x.abs().sum().item() > 0 else 0.5
        return self.fc(torch.relu(self.conv(x) * scale).mean((2, 3)))
