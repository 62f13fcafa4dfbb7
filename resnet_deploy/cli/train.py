"""`resnet-deploy train` and `evaluate`."""

from resnet_deploy.cli.common import not_built_yet

COMMANDS = [not_built_yet("train", "issue 2"), not_built_yet("evaluate", "issue 2")]
