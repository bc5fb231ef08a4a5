from vdnacli.cli.app import main

main()
