import torch
import torch.nn as nn


class Net(nn.Module):
    """Small while the harness counts it (after __init__, and at the training steps it counts), then 3M
    parameters more at its first forward in eval mode (the predictions, after training). The harness counts
    the net again after the predictions (preflight.EvalCount), and the host counts the weights it returns.
    (Grown at the first training forward, the harness's count after that counted step refuses it:
    attack_strided_parameter.)"""

    def __init__(self, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 8, 3, padding=1)
        self.fc = nn.Linear(8, num_classes)
        self.grown = False

    def forward(self, x):
        if not self.grown and not self.training and x.device.type != "meta":
            self.grown = True
            self.extra = nn.Parameter(torch.zeros(3_000_000, device=x.device))
        x = torch.relu(self.conv(x)).mean((2, 3))
        return self.fc(x)
