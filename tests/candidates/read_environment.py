# Sandbox test: run with the static check off (it rejects `import os`).
# Always fails, listing the variable names it can see, so the test can check none leaked.
import os
import torch.nn as nn


class Net(nn.Module):
    def __init__(self, num_classes=10, in_channels=3):
        super().__init__()
        raise RuntimeError("ENV " + ",".join(sorted(os.environ)))
