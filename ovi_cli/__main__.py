from ovi_cli.entry import main

main()
