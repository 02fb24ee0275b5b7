import torch
import torch.nn as nn


class Net(nn.Module):
    """A 16-value parameter that, from the first forward on, views a 3,000,000-value storage: numel says 16,
    the view `as_strided` over the whole storage reads them all, and they are trained by hand from its
    gradient. Its storage is the parameter's own, so no read of it looks like a tensor from outside."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 8, 3, padding=1)
        self.fc = nn.Linear(8, num_classes)
        self.w = nn.Parameter(torch.zeros(16))
        self.full = None

    def forward(self, x):
        if self.full is None or self.full.device != x.device:
            big = torch.zeros(3_000_000, device=x.device)
            self.w.data = big[:16]
            self.full = big.as_strided((3_000_000,), (1,), 0).requires_grad_()
        elif self.full.grad is not None:
            with torch.no_grad():
                self.full.sub_(0.01 * self.full.grad)
            self.full.grad = None
        x = torch.relu(self.conv(x)).mean((2, 3))
        return self.fc(x) + self.full[:x.shape[0]].unsqueeze(1) * 0 + self.w.sum() * 0
