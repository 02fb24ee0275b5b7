# A plausible slip, not an attack: a block that defines __eq__ (and so loses __hash__). PyTorch's own
# module walk needs hashable modules; the failure must be this candidate's outcome, never sandbox_error.
import torch.nn as nn


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def __eq__(self, other):
        return isinstance(other, Block)

    def forward(self, x):
        return self.conv(x)


class Net(nn.Module):
    def __init__(self, num_classes=10, in_channels=3):
        super().__init__()
        self.stem = nn.Conv2d(in_channels, 8, 3, padding=1)
        self.block = Block(8)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x):
        return self.fc(self.pool(self.block(self.stem(x))).flatten(1))
