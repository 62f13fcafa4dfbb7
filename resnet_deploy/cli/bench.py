"""`resnet-deploy bench`."""

from resnet_deploy.cli.common import not_built_yet

COMMANDS = [not_built_yet("bench", "issue 5")]
