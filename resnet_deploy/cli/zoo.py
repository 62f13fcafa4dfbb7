"""`resnet-deploy models`: the model zoo."""

from resnet_deploy.cli.common import not_built_yet

COMMANDS = [not_built_yet("models", "issue 2")]
