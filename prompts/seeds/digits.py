import torch
import torch.nn as nn
import torch.nn.functional as F


class Net(nn.Module):
    """Seed architecture for digits, deliberately small so that a first search can improve on it: one
    8-channel conv-BN-ReLU stage, pooled to a 2x2 grid, and a linear head (435 parameters). It scores
    about 0.78 with the default budget; the standard seed (default.py) scores 0.99 on digits, which left
    a first search nothing to find."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(8 * 2 * 2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # One operation per line, no nested calls: small models copy this style without bracket slips.
        x = self.conv1(x)
        x = self.bn1(x)
        x = F.relu(x)
        x = self.pool(x)
        x = F.adaptive_avg_pool2d(x, 2)
        x = torch.flatten(x, 1)
        return self.fc(x)
