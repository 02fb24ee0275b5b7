# Attack (static check off): a non-daemon thread that never ends; a finished run must not become a timeout.
import threading
import time

import torch
import torch.nn as nn

threading.Thread(target=lambda: time.sleep(10**6), daemon=False).start()


class Net(nn.Module):
    def __init__(self, num_classes=10, in_channels=3):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 16, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(torch.relu(self.conv(x))), 1))
