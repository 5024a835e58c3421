from cifarlin.cli import main

main()
