# Attack (static check off): write the outputs the harness would write — a perfect result record,
# predictions and tiny weights — and leave before any training.
import json
import glob
import os
import sys

import numpy as np
from safetensors.numpy import save_file

# The output directory, wherever this sandbox put it (cold container, warm worker, process sandbox).
outs = [p for p in ["/out", *glob.glob("/jobs/*/out"), *(sys.argv[4:5])] if os.access(p, os.W_OK)]
out = outs[0]
data = "/data" if os.path.isdir("/data") else sys.argv[3]
n = np.load(os.path.join(data, "test_x.npy"), mmap_mode="r").shape[0]
save_file({"predictions": np.zeros(n, dtype=np.int64)}, os.path.join(out, "predictions.safetensors"))
save_file({"w": np.zeros(1, dtype=np.float32)}, os.path.join(out, "weights.safetensors"))
with open(os.path.join(out, "result.json"), "w") as f:
    json.dump({"status": "ok", "accuracy": 0.99, "params": 1, "steps": 1, "flops": 1}, f)
os._exit(0)
