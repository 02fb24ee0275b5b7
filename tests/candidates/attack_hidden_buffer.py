# Attack: hide 5 million weights in a buffer so the parameter budget does not see them.
import torch
import torch.nn as nn


class Net(nn.Module):
    def __init__(self, num_classes=10, in_channels=3):
        super().__init__()
        self.register_buffer("table", torch.zeros(5_000_000))
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x):
        return self.fc(x.mean((2, 3))) + self.table[:1] * 0
