# Attack (static check off): end with SIGKILL (exit 137) without any memory pressure: was reported as host_oom.
import os
import signal

os.kill(os.getpid(), signal.SIGKILL)
