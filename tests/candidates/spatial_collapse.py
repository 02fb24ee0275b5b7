import torch
import torch.nn as nn


class Net(nn.Module):
    """Six 2x2 poolings on a 32x32 input: the map is 1x1 after five, the sixth collapses it to 0x0."""

    def __init__(self, num_classes=10, in_channels=3):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 16, 3, padding=1)
        self.pools = nn.Sequential(*[nn.MaxPool2d(2) for _ in range(6)])
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        x = self.pools(torch.relu(self.conv(x)))
        return self.fc(torch.flatten(x, 1))
