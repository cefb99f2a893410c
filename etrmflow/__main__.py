from etrmflow.cli import main

main()
