from churnops.cli import main

main()
