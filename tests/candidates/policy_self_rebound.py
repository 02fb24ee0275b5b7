# Attack: private attributes are allowed on `self`, so a module-level variable named `self` bound to torch
# reaches the native extension.
import torch
import torch.nn as nn

self = torch
native = self._C


class Net(nn.Module):
    def __init__(self, num_classes=10, in_channels=3):
        super().__init__()
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x):
        return self.fc(x.mean((2, 3)))
