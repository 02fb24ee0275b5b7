# Attack (static check off): a result record nested 100,000 levels deep (crashed the host's parser with
# a RecursionError), then leave.
import glob
import os
import sys

# The output directory, wherever this sandbox put it (cold container, warm worker, process sandbox).
outs = [p for p in ["/out", *glob.glob("/jobs/*/out"), *(sys.argv[4:5])] if os.access(p, os.W_OK)]
out = outs[0]
data = "/data" if os.path.isdir("/data") else sys.argv[3]
with open(os.path.join(out, "result.json"), "w") as f:
    f.write("[" * 100_000 + "]" * 100_000)
os._exit(0)
