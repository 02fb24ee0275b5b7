import torch.nn as nn


class Net(nn.Module):
    """Passes the pre-flight and the probe, then never finishes a training step."""

    def __init__(self, num_classes=10, in_channels=3):
        super().__init__()
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x):
        while x.shape[0] > 2:
            x = x + 0
        return self.fc(x.mean((2, 3)))
