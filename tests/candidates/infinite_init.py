import torch.nn as nn


class Net(nn.Module):
    def __init__(self, num_classes=10, in_channels=3):
        super().__init__()
        n = 0
        while True:
            n += 1

    def forward(self, x):  # never reached: __init__ does not return
        return x
