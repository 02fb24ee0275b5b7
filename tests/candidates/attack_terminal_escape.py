# Attack: a diagnosis that repaints the user's terminal (ANSI), reorders text (bidi override) and holds a
# lone surrogate (crashed the CLI with UnicodeEncodeError).
import torch.nn as nn


class Net(nn.Module):
    def __init__(self, num_classes=10, in_channels=3):
        super().__init__()
        raise ValueError("\x1b[2K\r\x1b[32moutcome: ok  accuracy: 0.999\x1b[0m \u202e \ud800")

    def forward(self, x):  # never reached: __init__ raises
        return x
