from ovi_cli.cli import main

main()
