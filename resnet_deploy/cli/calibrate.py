"""`resnet-deploy calibrate`."""

from resnet_deploy.cli.common import not_built_yet

COMMANDS = [not_built_yet("calibrate", "issue 3")]
