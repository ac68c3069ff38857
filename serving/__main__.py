"""`python -m serving serve ...`: the `serve` command without the `loopline` console script."""
from serving.cli import main

if __name__ == '__main__':
  main()
