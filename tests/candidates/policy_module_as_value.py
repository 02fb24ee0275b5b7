# Attack: a module bound to a variable side-steps every check on `torch.X` chains.
import torch
import torch.nn as nn

t = torch
lib = t.library.Library("aten", "IMPL")


class Net(nn.Module):
    def __init__(self, num_classes=10, in_channels=3):
        super().__init__()
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x):
        return self.fc(x.mean((2, 3)))
