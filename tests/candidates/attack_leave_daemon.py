import os

import torch.nn as nn

# Leaves a process behind (process sandbox; needs the static check off): fork, a session of its own (out of the
# process group the host kills), fork again, and the grandchild becomes `sleep 3141.59`. Left running, such a
# process could wait for the next job's output directory and write a forged result into it.
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execv("/bin/sleep", ["sleep", "3141.59"])
    os._exit(0)


class Net(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x):
        return self.fc(x.mean((2, 3)))
