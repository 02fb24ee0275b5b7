# Attack: a `match` class pattern reads attributes by keyword, so `object(__class__=...)` walks the dunder
# ladder without a single `.attr` node: () -> tuple -> object -> object.__subclasses__().
import torch.nn as nn


def ladder(obj):
    match obj:
        case object(__class__=object(__base__=object(__subclasses__=subclasses))):
            return subclasses()
    return []


class Net(nn.Module):
    def __init__(self, num_classes=10, in_channels=3):
        super().__init__()
        self.found = [c for c in ladder(()) if "wrap_close" in str(c)]
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x):
        return self.fc(x.mean((2, 3)))
