# Policy bypass (found by an attacker's review): TorchScript source is a string the AST policy never sees,
# and inside it the banned torch.from_file reads any file the sandbox can read.
import torch
import torch.nn as nn

CU = torch.CompilationUnit('''
def rd(name: str, n: int):
    return torch.from_file(name, False, n, dtype=torch.uint8)
''')


class Net(nn.Module):
    def __init__(self, num_classes=10, in_channels=3):
        super().__init__()
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x):
        return self.fc(x.mean((2, 3)))
