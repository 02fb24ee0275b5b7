import torch
import torch.nn as nn
import torch.nn.functional as F


class Net(nn.Module):
    """1.4M parameters, within the budget, but no downsampling until the end: 256 channels at full
    resolution cost about 0.9 GFLOPs per 32x32 image, ~40x the seed. Trained, it would run into the
    timeout; the FLOP budget rejects it at the pre-flight."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 128, 3, padding=1)
        self.conv2 = nn.Conv2d(128, 256, 3, padding=1)
        self.conv3 = nn.Conv2d(256, 256, 3, padding=1)
        self.fc = nn.Linear(256, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.relu(self.conv3(x))
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc(x)
