import torch.nn as nn


class Net(nn.Module):
    """Returns 5 logits whatever num_classes says."""

    def __init__(self, num_classes=10, in_channels=3):
        super().__init__()
        self.fc = nn.Linear(in_channels, 5)

    def forward(self, x):
        return self.fc(x.mean((2, 3)))
