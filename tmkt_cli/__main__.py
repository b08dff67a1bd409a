from tmkt_cli.cli import main

main()
