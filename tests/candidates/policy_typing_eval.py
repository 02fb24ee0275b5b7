# Attack: typing.get_type_hints evaluates string annotations with the module's globals: code hidden in a string.
import typing

import torch.nn as nn


def probe(x: "__import__('os').getpid()"):
    return x


leak = typing.get_type_hints(probe)


class Net(nn.Module):
    def __init__(self, num_classes=10, in_channels=3):
        super().__init__()
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x):
        return self.fc(x.mean((2, 3)))
