# Attack: an exception whose __str__ raises, thrown in forward (this became sandbox_error and stopped
# the search when the harness formatted it).
import torch
import torch.nn as nn


class Evil(Exception):
    def __str__(self):
        raise RuntimeError("no message for you")


class Net(nn.Module):
    def __init__(self, num_classes=10, in_channels=3):
        super().__init__()
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x):
        raise Evil()
