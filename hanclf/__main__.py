from hanclf.cli.main import main

main()
