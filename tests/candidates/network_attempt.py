# Sandbox test: run with the static check off (it rejects `import socket`).
import socket
import torch.nn as nn


class Net(nn.Module):
    def __init__(self, num_classes=10, in_channels=3):
        super().__init__()
        socket.create_connection(("1.1.1.1", 53), timeout=5)  # must fail: no network in the sandbox
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x):
        return self.fc(x.mean((2, 3)))
