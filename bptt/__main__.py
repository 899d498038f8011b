"""``python -m bptt``: the same as the ``bptt`` command."""
from cli import main

if __name__ == "__main__":
    main()
