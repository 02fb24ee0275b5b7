# Attack: a method called through the class takes any object as `self`: here a tensor, whose private storage
# API puts its memory in a shared file.
import torch
import torch.nn as nn


class Net(nn.Module):
    def __init__(self, num_classes=10, in_channels=3):
        super().__init__()
        self.handle = Net.publish(Net.grab(torch.ones(4)))
        self.fc = nn.Linear(in_channels, num_classes)

    def grab(self):
        return self._typed_storage()

    def publish(self):
        return self._share_filename_cpu_()

    def forward(self, x):
        return self.fc(x.mean((2, 3)))
