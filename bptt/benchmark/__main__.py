"""``python -m bptt.benchmark worker FRAMEWORK THREADS``: a timing worker (see :mod:`.workers`)."""
import sys

from .workers import worker_main

if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "worker":
        worker_main(sys.argv[2], int(sys.argv[3]))
    else:
        sys.exit("usage: python -m bptt.benchmark worker bptt|torch THREADS (started by `bptt bench`)")
