# Attack: a tensor's numpy view writes files (`ndarray.tofile`) without `open`.
import torch
import torch.nn as nn


class Net(nn.Module):
    def __init__(self, num_classes=10, in_channels=3):
        super().__init__()
        torch.ones(4).numpy().tofile("/tmp/planted.bin")
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x):
        return self.fc(x.mean((2, 3)))
