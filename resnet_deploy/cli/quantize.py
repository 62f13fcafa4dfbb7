"""`resnet-deploy export` and `parity`."""

from resnet_deploy.cli.common import not_built_yet

COMMANDS = [not_built_yet(n, "issue 3") for n in ("export", "parity")]
