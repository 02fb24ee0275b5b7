# Attack (static check off): print the words of a CUDA out-of-memory error and leave: was reported as gpu_oom.
import os
import sys

print("RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB", file=sys.stderr, flush=True)
os._exit(1)
