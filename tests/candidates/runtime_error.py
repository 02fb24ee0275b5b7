import torch.nn as nn


class Net(nn.Module):
    def __init__(self, num_classes=10, in_channels=3):
        super().__init__()
        self.blocks = nn.ModuleList([nn.Conv2d(in_channels, 8, 3, padding=1)])
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x):
        x = self.blocks[3](x)  # IndexError: only one block exists
        return self.fc(x.mean((2, 3)))
