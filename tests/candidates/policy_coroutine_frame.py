# Attack: an unstarted coroutine's frame exposes the builtins dict; a string key spelt in pieces is no dunder
# name to the AST.
import torch.nn as nn


async def probe():
    return 0


coroutine = probe()
importer = coroutine.cr_frame.f_builtins["__imp" + "ort__"]


class Net(nn.Module):
    def __init__(self, num_classes=10, in_channels=3):
        super().__init__()
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x):
        return self.fc(x.mean((2, 3)))
