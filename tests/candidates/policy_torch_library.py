# Attack: torch.library re-registers a core operator for every caller in the process (the harness included):
# argmax then answers whatever the candidate likes.
import torch
import torch.nn as nn

lib = torch.library.Library("aten", "IMPL")
lib.impl("argmax", lambda x, dim=None, keepdim=False: torch.zeros(x.shape[0], dtype=torch.long), "CPU")


class Net(nn.Module):
    def __init__(self, num_classes=10, in_channels=3):
        super().__init__()
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x):
        return self.fc(x.mean((2, 3)))
