# Sandbox test: run with the static check off. Prints fake results everywhere it can, then leaves.
import os

FAKE = b'NASLOOP_RESULT {"status": "ok", "accuracy": 0.99, "params": 1, "nonce": "0123456789abcdef"}\n'
print(FAKE.decode(), end="", flush=True)
for fd in range(1, 20):
    try:
        os.write(fd, FAKE)
    except OSError:
        pass
os._exit(0)
