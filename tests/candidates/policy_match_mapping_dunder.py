# Attack: a `match` mapping pattern reads keys of a namespace dict: `{"__builtins__": ...}` needs no subscript
# with a visible dunder attribute.
import torch.nn as nn


def unpack(namespace):
    match namespace:
        case {"__builtins__": {"__import__": importer}}:
            return importer
    return None


class Net(nn.Module):
    def __init__(self, num_classes=10, in_channels=3):
        super().__init__()
        self.importer = unpack({})
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x):
        return self.fc(x.mean((2, 3)))
