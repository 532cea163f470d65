from camunda_relay.cli import main

main()
