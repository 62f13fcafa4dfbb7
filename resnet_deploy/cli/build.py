"""`resnet-deploy build`."""

from resnet_deploy.cli.common import not_built_yet

COMMANDS = [not_built_yet("build", "issue 4")]
