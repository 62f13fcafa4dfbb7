"""`resnet-deploy infer` and `inspect`."""

from resnet_deploy.cli.common import not_built_yet

COMMANDS = [not_built_yet(n, "issue 4") for n in ("infer", "inspect")]
