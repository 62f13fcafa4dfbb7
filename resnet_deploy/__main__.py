from resnet_deploy.cli import main

main()
