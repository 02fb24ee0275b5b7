# Sandbox test: run with the static check off (it rejects `open`).
import torch.nn as nn


class Net(nn.Module):
    def __init__(self, num_classes=10, in_channels=3):
        super().__init__()
        with open("/job/planted.py", "w") as f:  # the job directory is mounted read-only
            f.write("pwned")
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x):
        return self.fc(x.mean((2, 3)))
