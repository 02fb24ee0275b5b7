# Sandbox test: run with the static check off (it rejects `import os`).
import os

os._exit(0)
