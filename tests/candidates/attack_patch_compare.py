# Attack (static check off): alias torch.Tensor and replace the methods an accuracy is computed with,
# so that any comparison of predictions with labels says "all correct" (this forged 1.0 when the harness
# scored in the candidate's process).
import torch
import torch.nn as nn

T = torch.Tensor
T.__eq__ = lambda a, b: torch.ones(a.shape, dtype=torch.bool)
_sum = T.sum
T.sum = lambda a, *args, **kw: _sum(torch.ones_like(a, dtype=torch.float32), *args, **kw)
T.mean = lambda a, *args, **kw: torch.tensor(1.0)


class Net(nn.Module):
    def __init__(self, num_classes=10, in_channels=3):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 16, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(torch.relu(self.conv(x))), 1))
