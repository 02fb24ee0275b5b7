# Attack (static check off): override aten operators through torch.library so that equality is always
# true and argmax returns class 0 (this forged 1.0 when the harness scored in the candidate's process).
import torch
import torch.nn as nn

lib = torch.library.Library("aten", "IMPL")
lib.impl("eq.Tensor", lambda a, b: torch.ones(torch.broadcast_shapes(a.shape, b.shape), dtype=torch.bool), "CPU")


class Net(nn.Module):
    def __init__(self, num_classes=10, in_channels=3):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 16, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(torch.relu(self.conv(x))), 1))
