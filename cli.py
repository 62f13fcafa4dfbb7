#!/usr/bin/env python3
"""Run the resnet-deploy CLI from a checkout: `python cli.py --help`."""

from resnet_deploy.cli import main

if __name__ == "__main__":
    main()
