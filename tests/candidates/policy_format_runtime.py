# Policy bypass (found by an attacker's review): a format string built at run time reads attributes the
# policy refuses when written out ("{0.__globals__[__file__]}").
import torch.nn as nn
import torch.nn.functional as F

SECRET = ("{0.%s[%s]}" % ("__globals__", "__file__")).format(F.relu)


class Net(nn.Module):
    def __init__(self, num_classes=10, in_channels=3):
        super().__init__()
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x):
        return self.fc(x.mean((2, 3)))
