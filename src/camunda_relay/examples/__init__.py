"""Example worker modules, runnable with ``camunda-relay worker camunda_relay.examples.NAME``."""
